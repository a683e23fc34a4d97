"""A loopback Hugging Face Hub: the subset of the wire protocol ``huggingface_hub`` 2.x speaks for
repo create / info, preupload, the NDJSON commit endpoint (with ``parentCommit`` compare-and-swap),
tree listing, paths-info, refs, commits and ``resolve/`` downloads, driven by the real client through
``HfApi(endpoint=...)`` / ``HF_ENDPOINT``.

Preupload answers "regular" for small files, so the client sends them inline; files over 10 MiB (or
marked ``filter=lfs`` by the repo's ``.gitattributes``, by default only ``*.bin``) get "lfs" and go
through the git-LFS batch API and a separate storage host: see ``hub_lfs.py``. Never Xet: clients
must run with ``HF_HUB_DISABLE_XET=1``. Faults are switchable at run time through ``HubEmulator.faults``:

- ``overlap_409``: a commit arriving while another is being applied gets 409 (the Hub's per-repo
  commit lock); ``commit_hold_s`` is how long applying takes, ``random_409_rate`` adds more 409s;
- ``quota_commits`` / ``quota_window_s``: after N applied commits in a window, 429 with
  ``Retry-After`` (the Hub's per-repo commit quota; ``quota_retry_after=False``: the message only);
- ``error_after_commit_rate`` / ``drop_after_commit_rate``: the commit IS applied, then the answer is
  a 500 or no answer at all (closed connection): the client cannot know the outcome;
- ``lag_reads``: after each commit, that many repo-info reads still report the previous head;
- ``delay_s``: every response is slowed down; ``down``: no request (but preupload)
  gets an answer;
- ``script``: explicit outcomes for the next commits: a status (409, 429, 412, 500, 403...) refuses
  the commit without applying it, ``"500-after"`` / ``"drop-after"`` apply it and then fail, ``None``
  lets it through (e.g. ``[409, None, "500-after"]``);
- ``lfs_script``: outcomes for the next LFS storage uploads (``hub_lfs.py``).

The quota window runs on the emulator's ``clock``, so a test can share a fake clock with the client.
Counters (``stats``) split requests into the Hub's API and resolver buckets (and ``storage`` for the
LFS host); ``lfs_bytes_received`` counts the bytes that reached the storage host, ``inline_bytes_received``
the (decoded) contents of inline commit lines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from . import hub_lfs
from .hub_helpers import ManualClock, index_rows, make_items, paths_info, tree_entries
from .hub_http import Drop as _Drop
from .hub_http import HubError, HubHandlerBase
from .hub_lfs import serve_bytes
from .server import LoopbackServer, QuietServer

__all__ = ["Commit", "HubEmulator", "HubError", "HubFaults", "ManualClock", "Repo", "git_blob_oid", "index_rows",
           "make_items"]

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
RESOLVE_PREFIX = hub_lfs.RESOLVE_PREFIX
MSG_412 = "The branch was updated since you opened this page. Please refresh and try again."
MSG_409 = "Another commit operation is in progress for this repository. Please try again later."


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 the Hub reports as a regular file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubFaults:
    seed: int = 0
    overlap_409: bool = False
    commit_hold_s: float = 0.0
    random_409_rate: float = 0.0
    quota_commits: int = 0
    quota_window_s: float = 3600.0
    quota_retry_after: bool = True  # False: the 429 says only "retry ... in about 1 hour" (no header)
    error_after_commit_rate: float = 0.0
    drop_after_commit_rate: float = 0.0
    lag_reads: int = 0
    delay_s: float = 0.0
    down: bool = False  # every request: connection closed without an answer
    # Check that every deleted path exists before the parentCommit check (hf-hub.md gives no order):
    # a stale commit deleting what a later one removed then gets 404 EntryNotFound, not 412.
    deletes_before_parent: bool = False
    # Another client's creation not yet visible: the next N repo-info reads answer 404 RepoNotFound.
    repo_info_misses: int = 0
    create_409_without_url: bool = False  # the protocol does not promise the 409's body names the repo
    bare_404: bool = False  # 404s without X-Error-Code (hf-hub.md's own mock sends none)
    paths_info_folders: bool = True  # False: paths-info answers file entries only (not promised either way)
    script: list[Any] = field(default_factory=list)
    lfs_script: list[Any] = field(default_factory=list)  # next storage PUTs: status, "truncate", "drop", None


@dataclass
class Commit:
    sha: str
    parent: str
    title: str
    files: dict[str, str]  # path -> blob oid
    at: float
    added: list[str]
    deleted: list[str]
    lfs_added: list[str] = field(default_factory=list)  # the added paths that came as ``lfsFile`` lines


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    head: str = ""
    lag_sha: str = ""
    lag_left: int = 0
    applied_at: list[float] = field(default_factory=list)
    commit_lock: threading.Lock = field(default_factory=threading.Lock)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes: LFS storage is per repo

    def resolve(self, rev: str) -> Commit | None:
        if rev in ("main", "refs/heads/main"):
            return self.commits[self.head]
        if rev in self.commits:
            return self.commits[rev]
        if len(rev) >= 7:
            found = [c for sha, c in self.commits.items() if sha.startswith(rev)]
            if len(found) == 1:
                return found[0]
        return None


class HubEmulator(LoopbackServer):
    """In-memory Hub behind a loopback HTTP server on 127.0.0.1 (ephemeral port), plus its LFS storage host.

    ``gitattributes``: the ``.gitattributes`` of the initial commit of new repos (its ``filter=lfs``
    patterns make preupload answer "lfs"; ``hub_lfs.HUB_DATASET_GITATTRIBUTES`` is the Hub's choice).
    ``lfs_chunk_size``: when set, LFS objects bigger than that are uploaded in parts of that size.
    """

    def __init__(self, *, faults: HubFaults | None = None, clock: Callable[[], float] = time.monotonic,
                 tree_page_size: int = 1000, gitattributes: bytes = b"*.bin filter=lfs\n",
                 lfs_chunk_size: int = 0) -> None:
        self.faults = faults or HubFaults()
        self.clock = clock
        self.tree_page_size = tree_page_size
        self.gitattributes = gitattributes
        self.lfs_chunk_size = lfs_chunk_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}  # blob oid -> content (LFS files: the pointer's oid -> the bytes)
        self.lfs_keys: dict[str, str] = {}  # blob oid of an LFS pointer -> the object's sha256
        self.lfs_parts: dict[tuple[str, str, str], dict[int, bytes]] = {}  # multipart uploads under way
        self._storage: QuietServer | None = None
        self.stats: Counter[str] = Counter()
        self.auth_headers_seen = 0
        self.token_hashes: set[str] = set()  # sha256 of bearer tokens seen (never the tokens)
        self._lock = threading.RLock()
        self._rng = random.Random(self.faults.seed)

    # -- lifecycle -------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return type("Handler", (_Handler,), {"hub": self})

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def storage_url(self) -> str:
        """The LFS storage host: another origin, so the client sends it no token (like signed S3 URLs)."""
        assert self._storage is not None, "emulator not started"
        host, port = self._storage.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubEmulator:
        super().start()
        self._storage = QuietServer(("127.0.0.1", 0), type("StorageHandler", (hub_lfs.StorageHandler,), {"hub": self}))
        threading.Thread(target=self._storage.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        super().stop()
        if self._storage is not None:
            self._storage.shutdown()
            self._storage.server_close()
            self._storage = None

    def set_faults(self, faults: HubFaults) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    # -- direct access for test assertions ---------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "dataset", rev: str = "main") -> dict[str, bytes]:
        with self._lock:
            commit = self.repo(repo_id, repo_type).resolve(rev)
            assert commit is not None
            return {p: self.blobs[o] for p, o in commit.files.items()}

    def history(self, repo_id: str, repo_type: str = "dataset") -> list[Commit]:
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            return [repo.commits[s] for s in repo.order]

    def create(self, repo_id: str, repo_type: str = "dataset", private: bool = True) -> Repo:
        """Create a repo with the Hub's initial ``.gitattributes`` commit."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                raise HubError(409, "You already created this dataset repo", "RepoExists")
            repo = Repo(repo_type, repo_id, private)
            self.repos[key] = repo
            self._apply(repo, "", "initial commit", {".gitattributes": self.gitattributes}, [], [])
            return repo

    # -- commits ------------------------------------------------------------------------------

    def _apply(self, repo: Repo, parent: str, title: str, adds: dict[str, bytes],
               del_files: list[str], del_folders: list[str], lfs_adds: dict[str, str] | None = None) -> Commit:
        files = dict(repo.commits[parent].files) if parent else {}
        for path in del_files:
            if path not in files:
                raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            del files[path]
        for folder in del_folders:
            prefix = folder.rstrip("/") + "/"
            doomed = [p for p in files if p.startswith(prefix)]
            if not doomed:
                raise HubError(404, "A folder with this name doesn't exist", "EntryNotFound")
            for path in doomed:
                del files[path]
        for path, data in adds.items():
            oid = git_blob_oid(data)
            self.blobs[oid] = data
            files[path] = oid
        for path, sha256 in (lfs_adds or {}).items():
            data = repo.lfs_objects[sha256]
            oid = git_blob_oid(hub_lfs.pointer(sha256, len(data)))
            self.blobs[oid], self.lfs_keys[oid] = data, sha256
            files[path] = oid
        sha = hashlib.sha1(f"{parent}{title}{uuid.uuid4().hex}".encode()).hexdigest()
        commit = Commit(sha, parent, title, files, self.clock(), sorted({*adds, *(lfs_adds or {})}),
                        sorted(del_files + del_folders), sorted(lfs_adds or {}))
        repo.commits[sha] = commit
        repo.order.append(sha)
        if repo.head:
            repo.lag_sha, repo.lag_left = repo.head, self.faults.lag_reads
        repo.head = sha
        return commit

    def _next_scripted(self) -> Any:
        return self.faults.script.pop(0) if self.faults.script else None

    def commit(self, repo: Repo, body: bytes) -> tuple[Commit, str]:
        """Apply one NDJSON commit; returns the commit and the post-apply fault to act out."""
        header, adds, lfs_adds, del_files, del_folders = _parse_ndjson(body)
        with self._lock:
            self.stats["inline_bytes_received"] += sum(len(data) for data in adds.values())
        acquired = repo.commit_lock.acquire(blocking=not self.faults.overlap_409)
        if not acquired:
            self.stats["commit_409_overlap"] += 1
            raise HubError(409, MSG_409)
        try:
            with self._lock:
                scripted = self._next_scripted()
                if scripted == 409 or self._rng.random() < self.faults.random_409_rate:
                    raise HubError(409, MSG_409)
                self._check_quota(repo, scripted)
                parent = header.get("parentCommit")
                if self.faults.deletes_before_parent:
                    head_files = repo.commits[repo.head].files
                    gone = [p for p in del_files if p not in head_files]
                    if gone:
                        self.stats["commit_404_delete"] += 1
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                if scripted == 412 or (parent and not repo.head.startswith(parent)):
                    raise HubError(412, MSG_412)
                if isinstance(scripted, int) and scripted not in (409, 429):
                    raise HubError(scripted, f"scripted failure {scripted} (nothing applied)")
                lfs = self._check_lfs(repo, lfs_adds)
                commit = self._apply(repo, repo.head, header.get("summary", ""), adds, del_files, del_folders, lfs)
                repo.applied_at.append(self.clock())
                after = self._after_fault(scripted)
            if self.faults.commit_hold_s:
                time.sleep(self.faults.commit_hold_s)
            return commit, after
        finally:
            repo.commit_lock.release()

    def _check_lfs(self, repo: Repo, lfs_adds: dict[str, tuple[str, int | None]]) -> dict[str, str]:
        """Every ``lfsFile`` must name an object this repo's storage accepted (the size, when given, too)."""
        missing = [p for p, (oid, size) in lfs_adds.items()
                   if oid not in repo.lfs_objects or (size is not None and len(repo.lfs_objects[oid]) != size)]
        if missing:
            self.stats["commit_missing_lfs"] += 1
            raise HubError(400, hub_lfs.MSG_MISSING.format(path=" - ".join(sorted(missing))), "BadRequest")
        return {p: oid for p, (oid, _) in lfs_adds.items()}

    def _check_quota(self, repo: Repo, scripted: Any) -> None:
        quota, window = self.faults.quota_commits, self.faults.quota_window_s
        now = self.clock()
        recent = [t for t in repo.applied_at if now - t < window]
        if scripted == 429 or (quota and len(recent) >= quota):
            wait = math.ceil(min(recent) + window - now) if (quota and recent) else 1
            wait = max(1, wait)
            self.stats["commit_429"] += 1
            raise HubError(
                429,
                f"You have exceeded the rate limit for repository commits ({quota or 128} per hour). "
                "You can retry this action in about 1 hour.",
                headers={"Retry-After": str(wait)} if self.faults.quota_retry_after else {},
            )

    def _after_fault(self, scripted: Any) -> str:
        if scripted in ("500-after", "drop-after"):
            return str(scripted)
        if self._rng.random() < self.faults.error_after_commit_rate:
            return "500-after"
        if self._rng.random() < self.faults.drop_after_commit_rate:
            return "drop-after"
        return ""

    def head_for_info(self, repo: Repo) -> str:
        """What repo-info reports as the head: possibly lagging behind (fault ``lag_reads``)."""
        with self._lock:
            if repo.lag_left > 0 and repo.lag_sha:
                repo.lag_left -= 1
                self.stats["lagged_head_reads"] += 1
                return repo.lag_sha
            return repo.head


def _parse_ndjson(body: bytes) -> tuple[dict, dict[str, bytes], dict[str, tuple[str, int | None]], list[str],
                                         list[str]]:
    """header, inline adds, LFS adds (path -> sha256, size or None for copies), deleted files, folders."""
    header: dict = {}
    adds: dict[str, bytes] = {}
    lfs_adds: dict[str, tuple[str, int | None]] = {}
    del_files: list[str] = []
    del_folders: list[str] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        key, value = entry["key"], entry["value"]
        if key == "header":
            header = value
        elif key == "file":
            if value.get("encoding") != "base64":
                raise HubError(400, "only base64 inline files are supported")
            adds[value["path"]] = base64.b64decode(value["content"])
            if len(adds[value["path"]]) > hub_lfs.LFS_THRESHOLD:
                raise HubError(400, f"Your push was rejected because {value['path']} is larger than 10 MiB: "
                                    "such files must be stored with LFS")
        elif key == "lfsFile":
            if value.get("algo", "sha256") != "sha256":
                raise HubError(400, "lfsFile oids are sha256")
            lfs_adds[value["path"]] = (str(value["oid"]), value.get("size"))
        elif key == "deletedFile":
            del_files.append(value["path"])
        elif key == "deletedFolder":
            del_folders.append(value["path"])
        else:
            raise HubError(400, f"unsupported commit line {key!r}")
    return header, adds, lfs_adds, del_files, del_folders


class _Handler(HubHandlerBase):
    """The Hub's own host: API, resolve and git-LFS endpoints."""

    def _send(self, method: str, status: int, payload: Any, headers: dict[str, str]) -> None:
        if status == 404 and self.hub.faults.bare_404:
            headers.pop("X-Error-Code", None)
        super()._send(method, status, payload, headers)

    def _route(self, method: str, raw_path: str, query: dict, body: bytes) -> tuple[int, Any, dict]:
        parts = raw_path.strip("/").split("/")
        if parts[:2] == ["api", "whoami-v2"]:
            return 200, {"name": "emulated-user", "type": "user", "orgs": [], "auth": {}}, {}
        if parts[:2] == ["api", "validate-yaml"]:
            return 200, {"errors": [], "warnings": []}, {}
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"))
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in REPO_TYPES:
            repo = self._repo(REPO_TYPES[parts[1]], f"{parts[2]}/{parts[3]}")
            return self._repo_api(method, repo, parts[4:], query, body)
        if "resolve" in parts:
            i = parts.index("resolve")
            head = parts[:i]
            repo_type = "model"
            if head and head[0] in REPO_TYPES and len(head) == 3:
                repo_type, head = REPO_TYPES[head[0]], head[1:]
            repo = self._repo(repo_type, "/".join(head))
            rev = unquote(parts[i + 1])
            path = unquote("/".join(parts[i + 2:]))
            return self._resolve(method, repo, rev, path)
        git = hub_lfs.repo_of_git_path(parts)
        if git is not None and method == "POST":
            return hub_lfs.git_lfs_route(self.hub, self._repo(git[0], git[1]), git[2], body)
        if parts[:2] == ["api", "complete_multipart"] and method == "POST":
            return hub_lfs.complete_multipart(self.hub, query, body)
        raise HubError(404, f"no route for {method} {raw_path}")

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _create_repo(self, payload: dict) -> tuple[int, Any, dict]:
        repo_type = payload.get("type") or "model"
        name, org = payload["name"], payload.get("organization") or "emulated-user"
        repo_id = f"{org}/{name}"
        private = payload.get("visibility", "public") == "private" or bool(payload.get("private"))
        url = f"{self.hub.url}/{RESOLVE_PREFIX[repo_type]}{repo_id}"
        try:
            self.hub.create(repo_id, repo_type, private)
        except HubError as err:
            # The Hub's 409 body still names the repo; the client reads ``url`` from it.
            body = {"error": err.message, "url": url}
            if self.hub.faults.create_409_without_url:
                del body["url"]
            return err.status, body, {"X-Error-Message": err.message}
        self.hub.stats["repos_created"] += 1
        return 200, {"url": url, "name": repo_id}, {}

    def _commit_of(self, repo: Repo, rev: str) -> Commit:
        with self.hub._lock:
            commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _repo_api(self, method: str, repo: Repo, rest: list[str], query: dict, body: bytes) -> tuple:
        hub = self.hub
        action = rest[0] if rest else ""
        if not rest or action == "revision":
            if hub.faults.repo_info_misses > 0:
                hub.faults.repo_info_misses -= 1
                raise HubError(404, "Repository not found", "RepoNotFound")
            rev = unquote(rest[1]) if len(rest) > 1 else ""
            sha = self._commit_of(repo, rev).sha if rev else hub.head_for_info(repo)
            hub.stats["repo_info"] += 1
            return 200, {"id": repo.repo_id, "sha": sha, "private": repo.private, "disabled": False,
                         "gated": False, "downloads": 0, "likes": 0, "tags": []}, {}
        if action == "preupload":
            commit = self._commit_of(repo, unquote(rest[1]))
            files = json.loads(body)["files"]
            hub.stats["preupload"] += 1
            with hub._lock:
                return 200, {"files": [
                    {"path": f["path"], "uploadMode": hub_lfs.upload_mode(hub, commit, f["path"], int(f["size"])),
                     "shouldIgnore": False, "oid": hub_lfs.remote_oid(hub, commit, f["path"])} for f in files]}, {}
        if action == "commit" and method == "POST":
            return self._commit(repo, unquote(rest[1]), body)
        if action == "tree":
            return self._tree(repo, unquote(rest[1]), unquote("/".join(rest[2:])), query)
        if action == "paths-info":
            commit = self._commit_of(repo, unquote(rest[1]))
            paths = parse_qs(body.decode()).get("paths", [])
            hub.stats["paths_info"] += 1
            entries = paths_info(hub, commit, paths)
            if not hub.faults.paths_info_folders:
                entries = [e for e in entries if e["type"] == "file"]
            return 200, entries, {}
        if action == "refs":
            return 200, {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.head}],
                         "converts": [], "tags": []}, {}
        if action == "commits":
            return 200, self._commits(repo, unquote(rest[1])), {}
        if action == "xet-write-token":
            raise HubError(404, hub_lfs.MSG_NO_XET)
        raise HubError(404, f"no route for {method} {'/'.join(rest)}")

    def _commit(self, repo: Repo, rev: str, body: bytes) -> tuple:
        if rev not in ("main", "refs/heads/main"):
            raise HubError(400, "the emulator only commits to main")
        hub = self.hub
        hub.stats["commit_requests"] += 1
        commit, after = hub.commit(repo, body)
        hub.stats["commits"] += 1
        if after == "500-after":
            hub.stats["commit_500_after_apply"] += 1
            raise HubError(500, "Internal Error")
        if after == "drop-after":
            hub.stats["commit_dropped_after_apply"] += 1
            raise _Drop()
        prefix = RESOLVE_PREFIX[repo.repo_type]
        return 200, {"commitOid": commit.sha, "commitUrl": f"{hub.url}/{prefix}{repo.repo_id}/commit/{commit.sha}",
                     "commitMessage": commit.title}, {}

    def _tree(self, repo: Repo, rev: str, path: str, query: dict) -> tuple:
        commit = self._commit_of(repo, rev)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries = tree_entries(self.hub, commit, path, recursive)
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start:start + self.hub.tree_page_size]
        self.hub.stats["tree_pages"] += 1
        headers = {}
        if start + self.hub.tree_page_size < len(entries):
            enc_path = "/" + quote(path, safe="") if path else ""
            nxt = (f"{self.hub.url}/api/{repo.repo_type}s/{repo.repo_id}/tree/{quote(rev, safe='')}{enc_path}"
                   f"?recursive={str(recursive).lower()}&expand=false&cursor={start + len(page)}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        return 200, page, headers

    def _commits(self, repo: Repo, rev: str) -> list[dict]:
        commit: Commit | None = self._commit_of(repo, rev)
        out = []
        while commit is not None:
            out.append({"id": commit.sha, "title": commit.title, "message": commit.title,
                        "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                        "authors": [{"user": "emulated-user"}]})
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return out

    def _resolve(self, method: str, repo: Repo, rev: str, path: str) -> tuple:
        hub = self.hub
        with hub._lock:
            commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        oid = commit.files.get(path)
        if oid is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        data = hub.blobs[oid]
        hub.stats["downloads" if method == "GET" else "metadata_reads"] += 1
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{oid}"'}
        sha256 = hub.lfs_keys.get(oid)
        if sha256 is not None:
            # Like the Hub: a redirect to the storage host (the CDN), the object's sha256 and size on it.
            hub.stats["lfs_redirects"] += 1
            cdn = f"{hub.storage_url}/cdn/{repo.repo_type}/{repo.repo_id}/{sha256}"
            return 302, b"", {**headers, "Location": cdn, "X-Linked-Etag": f'"{sha256}"',
                              "X-Linked-Size": str(len(data)), "Content-Length": "0"}
        return serve_bytes(method, data, self.headers.get("Range"), headers)
