"""A client-side journal of completed followups for the hub store.

On the hub a completion (an Unsplash download tracking call made) is recorded by the next publish
commit, which may be minutes away; a kill -9 before it would make the restart repeat every call
completed since the last commit. So each completion is first appended to a small JSONL file on this
client's disk (flushed and fsynced before the next call is made), keyed by repository and client
id. A restart reads it before it completes anything; the next commit carries its entries to the
repository, after which they are dropped from the file.

Several processes of one client id may share the file: appends and rewrites take an exclusive
``flock`` on a sidecar lock file (rewrites replace the file, so its own inode cannot be locked).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..fsio import atomic_write, fsync_dir
from ..records import Followup

try:  # POSIX only; elsewhere a process-local lock is all there is
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def journal_path(folder: Path, repo_id: str, client_id: str) -> Path:
    """``folder/hub-followups-<repo>-<client>-<hash>.jsonl``: readable names, and a hash so two
    repos or clients whose names differ only in punctuation never share a file."""
    key = f"{repo_id}\n{client_id}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{repo_id}-{client_id}")[:80]
    return Path(folder) / f"hub-followups-{safe}-{digest}.jsonl"


def _key(f: Followup) -> tuple[str, str]:
    return (f.kind, f.item_id)


class FollowupJournal:
    """Completed followups not yet carried to the repository by a commit."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fcntl is None:
                yield
                return
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lock_fh:
                fcntl.flock(lock_fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock_fh, fcntl.LOCK_UN)

    def append(self, done: Iterable[Followup]) -> None:
        """Durably record completions: on disk before this returns (before the next call is made)."""
        lines = "".join(json.dumps({"kind": f.kind, "item_id": f.item_id, "payload": f.payload},
                                   sort_keys=True) + "\n" for f in done)
        if not lines:
            return
        with self._locked():
            new = not self.path.exists()
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())
            if new:
                fsync_dir(self.path.parent)

    def read(self) -> list[Followup]:
        """Every completion in the file, once each (a line cut short by a crash is skipped)."""
        with self._locked():
            return self._read()

    def _read(self) -> list[Followup]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out: dict[tuple[str, str], Followup] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                f = Followup(str(obj["kind"]), str(obj["item_id"]), str(obj.get("payload", "")))
            except (ValueError, KeyError, TypeError):
                log.warning("%s line %d is not a journal entry (cut short by a crash?); skipped", self.path, n)
                continue
            out.setdefault(_key(f), f)
        return list(out.values())

    def forget(self, committed: Iterable[Followup]) -> None:
        """Drop entries a commit has carried to the repository (others stay, even ones appended by
        another process of this client meanwhile)."""
        gone = {_key(f) for f in committed}
        if not gone:
            return
        with self._locked():
            entries = self._read()
            keep = [f for f in entries if _key(f) not in gone]
            if len(keep) == len(entries):
                return
            data = "".join(json.dumps({"kind": f.kind, "item_id": f.item_id, "payload": f.payload},
                                      sort_keys=True) + "\n" for f in keep)
            atomic_write(self.path, data.encode("utf-8"))
