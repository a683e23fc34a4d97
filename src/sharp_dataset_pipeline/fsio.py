"""Small file-system helpers shared by the local store and the maintenance commands.

Temp files are hidden and pid-tagged (``.<name>.tmp-<pid>-<hex>``): readers' globs skip them, and the
local store's repair removes those whose writer is gone. Every file is created with mode 0666 less
the process umask (0644 under umask 022), as ``open()`` would: ``tempfile.mkstemp``'s 0600 would
leave a store's splats unreadable to a web server or a group that can read its photos.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# Widest mode a new file asks for; the umask narrows it (as ``open(path, "wb")`` does).
NEW_FILE_MODE = 0o666


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (a claim or temp file of a dead one is void)."""
    if pid == os.getpid():
        return True
    if os.name == "nt" or pid <= 0:
        # Signal 0 is not a probe on Windows; keep whatever a maybe-live process owns.
        return pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tmp_for(final: Path) -> Path:
    """A hidden temp name beside ``final`` that names the writing process (see ``temp_writer``)."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


_TMP_RE = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")


def temp_writer(name: str) -> int | None:
    """The pid of the process writing a ``tmp_for`` temp file called ``name`` (None: not such a name)."""
    match = _TMP_RE.match(name)
    return int(match.group(1)) if match else None


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    if os.name != "nt":  # directories cannot be opened for fsync on Windows
        fsync_path(path)


@contextmanager
def atomic_file(path: Path, *, fsync: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; readers see the old file or the whole new
    one. The temp file is renamed over ``path`` only when the block ends without an error (and is
    removed otherwise); ``fsync`` flushes the data to disk before the rename. The folder must exist.
    """
    tmp = tmp_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, fsync=True) as fh:
        fh.write(data)
    fsync_dir(path.parent)
