"""A loopback Hugging Face Hub: the subset of the wire protocol ``huggingface_hub`` 2.x speaks for
repo create / info, preupload, the NDJSON commit endpoint (with ``parentCommit`` compare-and-swap),
tree listing, paths-info, refs, commits and ``resolve/`` downloads, driven by the real client through
``HfApi(endpoint=...)`` / ``HF_ENDPOINT``.

Preupload answers "regular" for every file, so the client sends contents inline and never starts
LFS or Xet transfers. Faults are switchable at run time through ``HubEmulator.faults``:

- ``overlap_409``: a commit arriving while another is being applied gets 409 (the Hub's per-repo
  commit lock); ``commit_hold_s`` is how long applying takes, ``random_409_rate`` adds more 409s;
- ``quota_commits`` / ``quota_window_s``: after N applied commits in a window, 429 with
  ``Retry-After`` (the Hub's per-repo commit quota);
- ``error_after_commit_rate`` / ``drop_after_commit_rate``: the commit IS applied, then the answer is
  a 500 or no answer at all (closed connection): the client cannot know the outcome;
- ``lag_reads``: after each commit, that many repo-info reads still report the previous head;
- ``delay_s``: every response is slowed down; ``down``: no request (but preupload)
  gets an answer;
- ``script``: explicit outcomes for the next commits: a status (409, 429, 412, 500, 403...) refuses
  the commit without applying it, ``"500-after"`` / ``"drop-after"`` apply it and then fail, ``None``
  lets it through (e.g. ``[409, None, "500-after"]``).

The quota window runs on the emulator's ``clock``, so a test can share a fake clock with the client.
Counters (``stats``) split requests into the Hub's API and resolver buckets.
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

from .server import LoopbackServer

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
RESOLVE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
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
    error_after_commit_rate: float = 0.0
    drop_after_commit_rate: float = 0.0
    lag_reads: int = 0
    delay_s: float = 0.0
    down: bool = False  # every request: connection closed without an answer
    script: list[Any] = field(default_factory=list)


@dataclass
class Commit:
    sha: str
    parent: str
    title: str
    files: dict[str, str]  # path -> blob oid
    at: float
    added: list[str]
    deleted: list[str]


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


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str = "", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


class _Drop(Exception):
    """Close the connection without an answer."""


class HubEmulator(LoopbackServer):
    """In-memory Hub behind a loopback HTTP server on 127.0.0.1 (ephemeral port)."""

    def __init__(self, *, faults: HubFaults | None = None, clock: Callable[[], float] = time.monotonic,
                 tree_page_size: int = 1000) -> None:
        self.faults = faults or HubFaults()
        self.clock = clock
        self.tree_page_size = tree_page_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, bytes] = {}
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
            self._apply(repo, "", "initial commit", {".gitattributes": b"*.bin filter=lfs\n"}, [], [])
            return repo

    # -- commits ------------------------------------------------------------------------------

    def _apply(self, repo: Repo, parent: str, title: str, adds: dict[str, bytes],
               del_files: list[str], del_folders: list[str]) -> Commit:
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
        sha = hashlib.sha1(f"{parent}{title}{uuid.uuid4().hex}".encode()).hexdigest()
        commit = Commit(sha, parent, title, files, self.clock(), sorted(adds), sorted(del_files + del_folders))
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
        header, adds, del_files, del_folders = _parse_ndjson(body)
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
                if scripted == 412 or (parent and not repo.head.startswith(parent)):
                    raise HubError(412, MSG_412)
                if isinstance(scripted, int) and scripted not in (409, 429):
                    raise HubError(scripted, f"scripted failure {scripted} (nothing applied)")
                commit = self._apply(repo, repo.head, header.get("summary", ""), adds, del_files, del_folders)
                repo.applied_at.append(self.clock())
                after = self._after_fault(scripted)
            if self.faults.commit_hold_s:
                time.sleep(self.faults.commit_hold_s)
            return commit, after
        finally:
            repo.commit_lock.release()

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
                headers={"Retry-After": str(wait)},
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


def _parse_ndjson(body: bytes) -> tuple[dict, dict[str, bytes], list[str], list[str]]:
    header: dict = {}
    adds: dict[str, bytes] = {}
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
        elif key == "deletedFile":
            del_files.append(value["path"])
        elif key == "deletedFolder":
            del_folders.append(value["path"])
        else:
            raise HubError(400, f"unsupported commit line {key!r} (the emulator answers 'regular' uploads)")
    return header, adds, del_files, del_folders


def _tree_entries(hub: HubEmulator, commit: Commit, path: str, recursive: bool) -> list[dict]:
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    if prefix and not any(p.startswith(prefix) for p in commit.files) and path.strip("/") not in commit.files:
        raise HubError(404, f"{path} does not exist", "EntryNotFound")
    dirs: dict[str, list[str]] = {}
    out = []
    for p in sorted(commit.files):
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix):].split("/")
        for depth in range(1, len(rest)):
            if depth > 1 and not recursive:
                break
            dirs.setdefault(prefix + "/".join(rest[:depth]), []).append(commit.files[p])
        if recursive or len(rest) == 1:
            out.append(_file_entry(hub, p, commit.files[p]))
    for d, oids in dirs.items():
        oid = hashlib.sha1("".join(oids).encode()).hexdigest()
        out.append({"type": "directory", "path": d, "oid": oid})
    return sorted(out, key=lambda e: e["path"])


def _file_entry(hub: HubEmulator, path: str, oid: str) -> dict:
    return {"type": "file", "path": path, "oid": oid, "size": len(hub.blobs[oid])}


class _Handler(BaseHTTPRequestHandler):
    hub: HubEmulator
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle delay: otherwise every request waits ~40 ms for an ACK.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stats, not logs
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        raw_path, _, query = self.path.partition("?")
        body = self._body() if method in ("POST", "DELETE") else b""
        auth = self.headers.get("Authorization") or ""
        if auth:
            hub.auth_headers_seen += 1
            hub.token_hashes.add(hashlib.sha256(auth.removeprefix("Bearer ").encode()).hexdigest())
        bucket = "resolver" if "/resolve/" in raw_path else "api"
        hub.stats[bucket] += 1
        if hub.faults.delay_s:
            time.sleep(hub.faults.delay_s)
        # Preupload is spared: the client retries it by itself with real sleeps (about 23 s).
        if hub.faults.down and "/preupload/" not in raw_path:
            self.close_connection = True
            return
        try:
            status, payload, headers = self._route(method, raw_path, parse_qs(query), body)
        except _Drop:
            self.close_connection = True
            return
        except HubError as err:
            hub.stats[f"status_{err.status}"] += 1
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            status, payload = err.status, {"error": err.message}
        self._send(method, status, payload, headers)

    def _send(self, method: str, status: int, payload: Any, headers: dict[str, str]) -> None:
        if isinstance(payload, bytes):
            data = payload
            headers.setdefault("Content-Type", "application/octet-stream")
        else:
            data = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

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
            return err.status, {"error": err.message, "url": url}, {"X-Error-Message": err.message}
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
            rev = unquote(rest[1]) if len(rest) > 1 else ""
            sha = self._commit_of(repo, rev).sha if rev else hub.head_for_info(repo)
            hub.stats["repo_info"] += 1
            return 200, {"id": repo.repo_id, "sha": sha, "private": repo.private, "disabled": False,
                         "gated": False, "downloads": 0, "likes": 0, "tags": []}, {}
        if action == "preupload":
            commit = self._commit_of(repo, unquote(rest[1]))
            files = json.loads(body)["files"]
            hub.stats["preupload"] += 1
            return 200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": commit.files.get(f["path"])} for f in files]}, {}
        if action == "commit" and method == "POST":
            return self._commit(repo, unquote(rest[1]), body)
        if action == "tree":
            return self._tree(repo, unquote(rest[1]), unquote("/".join(rest[2:])), query)
        if action == "paths-info":
            commit = self._commit_of(repo, unquote(rest[1]))
            paths = parse_qs(body.decode()).get("paths", [])
            hub.stats["paths_info"] += 1
            return 200, _paths_info(hub, commit, paths), {}
        if action == "refs":
            return 200, {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo.head}],
                         "converts": [], "tags": []}, {}
        if action == "commits":
            return 200, self._commits(repo, unquote(rest[1])), {}
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
        entries = _tree_entries(self.hub, commit, path, recursive)
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
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{oid}"', "Accept-Ranges": "bytes",
                   "Content-Length": str(len(data))}
        rng = self.headers.get("Range")
        if method == "GET" and rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end = int(a or 0), int(b) if b else len(data) - 1
            part = data[start:end + 1]
            headers.update({"Content-Range": f"bytes {start}-{start + len(part) - 1}/{len(data)}",
                            "Content-Length": str(len(part))})
            return 206, part, headers
        return 200, data, headers


def _paths_info(hub: HubEmulator, commit: Commit, paths: list[str]) -> list[dict]:
    out = []
    for path in paths:
        path = path.strip("/")
        if path in commit.files:
            out.append(_file_entry(hub, path, commit.files[path]))
        elif any(p.startswith(path + "/") for p in commit.files):
            oids = [o for p, o in sorted(commit.files.items()) if p.startswith(path + "/")]
            out.append({"type": "directory", "path": path, "oid": hashlib.sha1("".join(oids).encode()).hexdigest()})
    return out


class ManualClock:
    """A shared fake clock: ``sleep`` advances it, so waits cost no real time and stay checkable."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def make_items(folder: Any, ids: list[str], unit: str = "test/000-099", subdir: str = "photos") -> list[Any]:
    """Publishable items (a small 'jpg' and 'ply' each, unique bytes) for hub store tests."""
    from pathlib import Path

    from sharp_dataset_pipeline.records import IndexRow, ProcessedItem, PublishedFile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for item_id in ids:
        files = []
        row = IndexRow(id=item_id, source="test", unit=unit, client_id="")
        for kind, ext in (("image", "jpg"), ("ply", "ply")):
            data = f"{kind}:{item_id}:".encode() + hashlib.sha256(item_id.encode() + ext.encode()).digest()
            local = folder / f"{item_id}.{ext}"
            local.write_bytes(data)
            repo_path = f"{subdir}/{item_id}/{item_id}.{ext}"
            sha = hashlib.sha256(data).hexdigest()
            files.append(PublishedFile(kind, repo_path, local, len(data), sha))
            setattr(row, f"{kind}_path", repo_path)
            setattr(row, f"{kind}_size", len(data))
            setattr(row, f"{kind}_sha256", sha)
        items.append(ProcessedItem(row=row, files=files))
    return items


def index_rows(files: dict[str, bytes], index_path: str = "data/train.jsonl") -> list[dict]:
    """Every index row in a repo snapshot (compacted file + shards), in path order."""
    folder = index_path.rsplit("/", 1)[0] + "/" if "/" in index_path else ""
    stem = index_path.rsplit("/", 1)[-1][: -len(".jsonl")]
    rows = []
    for path in sorted(files):
        name = path[len(folder):]
        if path.startswith(folder) and "/" not in name and name.startswith(stem) and name.endswith(".jsonl"):
            rows += [json.loads(line) for line in files[path].decode().splitlines() if line.strip()]
    return rows
