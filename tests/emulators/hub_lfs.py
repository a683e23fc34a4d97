"""Big files on the loopback Hub: what happens once preupload answers ``lfs`` (``hub.py`` routes here).

- **Upload mode.** ``lfs`` for files over 10 MiB (the Hub refuses bigger inline files) and for paths the
  repo's ``.gitattributes`` at that revision marks ``filter=lfs``; ``regular`` otherwise. The Hub also
  sends binary files over ~1 MB to LFS; that is not emulated, so small binary test files stay inline.
- **Batch API** on the Hub host: ``POST {repo}.git/info/lfs/objects/batch`` answers ``basic`` upload
  actions (or ``multipart`` ones when the emulator has ``lfs_chunk_size``: the server decides, the client
  only follows ``header.chunk_size``) and a ``verify`` action on the Hub. Objects the repo already
  holds come back without actions, so the client sends no bytes for them.
- **Storage host**: a second loopback port, like the Hub's signed S3 / CDN URLs (the client sends no
  token there). ``PUT`` of the bytes, checked against the announced sha256 and size; multipart part
  ``PUT``s answered with an ``ETag``, joined by the completion ``POST`` on the Hub; ``GET`` of stored
  objects, where ``resolve/`` redirects LFS files with ``X-Linked-Etag`` / ``X-Linked-Size``.
- **Commits**: an ``lfsFile`` line must name an object this repo holds (with that size), else 400 with
  the Hub's "LFS pointer pointed to a file that does not exist".
- **No Xet.** The client uses Xet for every ``lfs`` file whenever ``hf_xet`` is importable, whatever the
  server says, so tests run with ``HF_HUB_DISABLE_XET=1`` (tests/conftest.py); ``xet-write-token``
  answers 404 saying so.

Faults: ``HubFaults.lfs_script`` gives outcomes for the next storage ``PUT``s (whole files or parts), in
order: a status (e.g. 503) is answered and nothing is stored; ``"truncate"`` keeps only the first half
of the bytes that arrived (a body cut short on the way: the checksum fails, 400); ``"drop"`` reads half
of the body and hangs up; ``None`` lets one through.
"""

from __future__ import annotations

import hashlib
import json
import re
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .hub_http import Drop, HubError, HubHandlerBase

if TYPE_CHECKING:
    from .hub import Commit, HubEmulator, Repo

LFS_THRESHOLD = 10 * 1024 * 1024  # bytes; bigger files are never accepted inline
MSG_MISSING = ("Your push was rejected because an LFS pointer pointed to a file that does not exist. "
               "Offending file: - {path}")
MSG_NO_XET = "this loopback Hub does not speak Xet: run the client with HF_HUB_DISABLE_XET=1"
OID_RE = re.compile(r"^[0-9a-f]{64}$")
RESOLVE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
STORAGE_TYPES = {"model", "dataset", "space"}

# The patterns of the Hub's default dataset .gitattributes that matter here (a subset, for tests that
# want the real Hub's choice for small shards, indexes and images): ``HubEmulator(gitattributes=...)``.
HUB_DATASET_GITATTRIBUTES = "".join(
    f"{p} filter=lfs diff=lfs merge=lfs -text\n"
    for p in ("*.7z", "*.arrow", "*.bin", "*.bz2", "*.gz", "*.npy", "*.npz", "*.parquet", "*.pickle", "*.pkl",
              "*.pt", "*.safetensors", "*.tar", "*.tar.*", "*.tgz", "*.zip", "*.zst", "*.jpg", "*.jpeg", "*.png",
              "*.webp", "*.gif", "*.mp4", "*.wav", "*.mp3")).encode()


def pointer(oid: str, size: int) -> bytes:
    """The git-LFS pointer file git stores for an LFS object (its git sha1 is the tree entry's ``oid``)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def lfs_patterns(gitattributes: bytes) -> list[str]:
    """The path patterns a ``.gitattributes`` file sends through the LFS filter."""
    out = []
    for line in gitattributes.decode("utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            out.append(parts[0])
    return out


def tracked(path: str, patterns: list[str]) -> bool:
    """gitattributes matching: a pattern without a slash matches the file name at any depth."""
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if "/" in pattern.strip("/"):
            if fnmatchcase(path, pattern.lstrip("/").replace("**/", "*")):
                return True
        elif fnmatchcase(name, pattern):
            return True
    return False


def upload_mode(hub: HubEmulator, commit: Commit, path: str, size: int) -> str:
    """What preupload answers for one file at this revision."""
    if size > LFS_THRESHOLD:
        return "lfs"
    attrs = commit.files.get(".gitattributes")
    if attrs is not None and tracked(path, lfs_patterns(hub.blobs[attrs])):
        return "lfs"
    return "regular"


def remote_oid(hub: HubEmulator, commit: Commit, path: str) -> str | None:
    """Preupload's ``oid``: sha256 for an LFS file, git sha1 for a regular one (the client compares)."""
    key = commit.files.get(path)
    if key is None:
        return None
    return hub.lfs_keys.get(key, key)


def repo_of_git_path(parts: list[str]) -> tuple[str, str, list[str]] | None:
    """``[datasets/]ns/name.git/info/lfs/...`` -> (repo type, repo id, the parts after ``lfs``)."""
    for i, part in enumerate(parts):
        if part.endswith(".git") and parts[i + 1:i + 3] == ["info", "lfs"]:
            head = parts[:i] + [part[: -len(".git")]]
            repo_type = {"datasets": "dataset", "spaces": "space"}.get(head[0], "model")
            if repo_type != "model":
                head = head[1:]
            return repo_type, "/".join(head), parts[i + 3:]
    return None


def git_lfs_route(hub: HubEmulator, repo: Repo, rest: list[str], body: bytes) -> tuple[int, Any, dict]:
    """The Hub-side LFS endpoints: batch, verify."""
    if rest == ["objects", "batch"]:
        return _batch(hub, repo, json.loads(body or b"{}"))
    if rest == ["objects", "verify"]:
        req = json.loads(body or b"{}")
        hub.stats["lfs_verify"] += 1
        held = repo.lfs_objects.get(str(req.get("oid")))
        if held is None or len(held) != req.get("size"):
            raise HubError(404, "Object not found")
        return 200, {}, {}
    raise HubError(404, f"no LFS route {'/'.join(rest)}")


def _batch(hub: HubEmulator, repo: Repo, req: dict) -> tuple[int, Any, dict]:
    hub.stats["lfs_batch"] += 1
    if req.get("operation") != "upload" or req.get("hash_algo", "sha256") != "sha256":
        raise HubError(422, "the emulated LFS batch API takes sha256 uploads only")
    if "basic" not in (req.get("transfers") or ["basic"]):
        raise HubError(422, "no common transfer adapter (the emulator has basic and multipart)")
    chunk = hub.lfs_chunk_size if "multipart" in (req.get("transfers") or []) else 0
    objects, multipart = [], False
    for obj in req.get("objects", []):
        oid, size = str(obj.get("oid", "")), obj.get("size")
        if not OID_RE.match(oid) or not isinstance(size, int) or size < 0:
            objects.append({"oid": oid, "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "invalid oid or size"}})
            continue
        entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
        held = repo.lfs_objects.get(oid)
        if held is None or len(held) != size:
            entry["actions"] = _actions(hub, repo, oid, size, chunk)
            multipart = multipart or "chunk_size" in entry["actions"]["upload"].get("header", {})
        else:
            hub.stats["lfs_already_present"] += 1
        objects.append(entry)
    return 200, {"transfer": "multipart" if multipart else "basic", "objects": objects}, {}


def _actions(hub: HubEmulator, repo: Repo, oid: str, size: int, chunk: int) -> dict:
    where = f"{repo.repo_type}/{repo.repo_id}/{oid}?size={size}"
    verify = {"href": f"{hub.url}/{RESOLVE_PREFIX[repo.repo_type]}{repo.repo_id}.git/info/lfs/objects/verify"}
    if chunk and size > chunk:
        parts = -(-size // chunk)
        header = {"chunk_size": str(chunk)}
        header.update({str(n): f"{hub.storage_url}/upload/{where}&part={n}" for n in range(1, parts + 1)})
        done = f"{hub.url}/api/complete_multipart?repo={quote(repo.repo_id)}&type={repo.repo_type}&oid={oid}"
        return {"upload": {"href": f"{done}&size={size}", "header": header}, "verify": verify}
    return {"upload": {"href": f"{hub.storage_url}/upload/{where}"}, "verify": verify}


def complete_multipart(hub: HubEmulator, query: dict, body: bytes) -> tuple[int, Any, dict]:
    """Join the parts the storage host received, in ``partNumber`` order, checking every ETag."""
    repo = hub.repos.get((query["type"][0], query["repo"][0]))
    if repo is None:
        raise HubError(404, "Repository not found", "RepoNotFound")
    oid, size = query["oid"][0], int(query["size"][0])
    listed = json.loads(body or b"{}").get("parts", [])
    with hub._lock:
        received = hub.lfs_parts.get((repo.repo_type, repo.repo_id, oid), {})
        chunks = []
        for n, part in enumerate(sorted(listed, key=lambda p: p["partNumber"]), start=1):
            data = received.get(n)
            if part["partNumber"] != n or data is None or part["etag"] != _etag(data):
                raise HubError(400, f"part {n} of {oid} is missing or its ETag does not match")
            chunks.append(data)
        _store(hub, repo, oid, size, b"".join(chunks))
        hub.lfs_parts.pop((repo.repo_type, repo.repo_id, oid), None)
    hub.stats["lfs_multipart_completed"] += 1
    return 200, {}, {}


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def _store(hub: HubEmulator, repo: Repo, oid: str, size: int, data: bytes) -> None:
    """Keep an object only if it is what was announced: the Hub never serves a short or wrong file."""
    if len(data) != size:
        raise HubError(400, f"received {len(data)} bytes for an object of {size} bytes", "SizeMismatch")
    if hashlib.sha256(data).hexdigest() != oid:
        raise HubError(400, "the content does not match its sha256", "BadDigest")
    repo.lfs_objects[oid] = data
    hub.stats["lfs_objects_stored"] += 1


def next_put_fault(hub: HubEmulator) -> Any:
    with hub._lock:
        return hub.faults.lfs_script.pop(0) if hub.faults.lfs_script else None


def storage_route(hub: HubEmulator, method: str, raw_path: str, query: dict, body: bytes, fault: Any,
                  range_header: str | None) -> tuple[int, Any, dict]:
    """The storage host: ``PUT /upload/{type}/{ns}/{name}/{oid}`` and ``GET /cdn/{type}/{ns}/{name}/{oid}``."""
    parts = raw_path.strip("/").split("/")
    if len(parts) != 5 or parts[1] not in STORAGE_TYPES:
        raise HubError(404, f"no storage route for {method} {raw_path}")
    repo = hub.repos.get((parts[1], f"{parts[2]}/{parts[3]}"))
    if repo is None:
        raise HubError(404, "NoSuchBucket")
    oid = parts[4]
    if parts[0] == "cdn" and method in ("GET", "HEAD"):
        data = repo.lfs_objects.get(oid)
        if data is None:
            raise HubError(404, "NoSuchKey")
        hub.stats["lfs_downloads" if method == "GET" else "lfs_metadata_reads"] += 1
        return serve_bytes(method, data, range_header, {"ETag": f'"{oid}"'})
    if parts[0] == "upload" and method == "PUT":
        return _put(hub, repo, oid, query, body, fault)
    raise HubError(405, f"{method} not allowed on {parts[0]}")


def _put(hub: HubEmulator, repo: Repo, oid: str, query: dict, body: bytes, fault: Any) -> tuple[int, Any, dict]:
    with hub._lock:
        hub.stats["lfs_put_requests"] += 1
        hub.stats["lfs_bytes_received"] += len(body)
    if isinstance(fault, int):
        hub.stats[f"lfs_put_{fault}"] += 1
        raise HubError(fault, f"scripted storage failure {fault} (nothing stored)")
    if fault == "truncate":
        hub.stats["lfs_put_truncated"] += 1
        body = body[: len(body) // 2]
    size = int(query["size"][0])
    if "part" in query:
        with hub._lock:
            hub.lfs_parts.setdefault((repo.repo_type, repo.repo_id, oid), {})[int(query["part"][0])] = body
            hub.stats["lfs_parts_received"] += 1
        return 200, b"", {"ETag": _etag(body)}
    with hub._lock:
        _store(hub, repo, oid, size, body)
    return 200, b"", {"ETag": _etag(body)}


def serve_bytes(method: str, data: bytes, range_header: str | None, headers: dict[str, str]) -> tuple:
    """A 200 with the whole body, or a 206 for ``Range: bytes=a-b``."""
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(len(data))}
    if method == "GET" and range_header and range_header.startswith("bytes="):
        a, _, b = range_header[6:].partition("-")
        start, end = int(a or 0), int(b) if b else len(data) - 1
        part = data[start:end + 1]
        headers.update({"Content-Range": f"bytes {start}-{start + len(part) - 1}/{len(data)}",
                        "Content-Length": str(len(part))})
        return 206, part, headers
    return 200, data, headers


class StorageHandler(HubHandlerBase):
    """The LFS storage host (see ``hub_lfs.py``): uploads and CDN downloads of LFS objects."""

    _fault: Any = None

    def _bucket(self, raw_path: str) -> str:
        return "storage"

    def _read_body(self, method: str) -> bytes:
        self._fault = next_put_fault(self.hub) if method == "PUT" else None
        if self._fault == "drop":
            # Part of the body arrives, then the connection is gone: no answer at all.
            self.hub.stats["lfs_put_dropped"] += 1
            self.rfile.read(int(self.headers.get("Content-Length") or 0) // 2)
            raise Drop()
        return super()._read_body(method)

    def _route(self, method: str, raw_path: str, query: dict, body: bytes) -> tuple[int, Any, dict]:
        return storage_route(self.hub, method, raw_path, query, body, self._fault, self.headers.get("Range"))
