"""Small file-system helpers shared by the local store and the maintenance commands.

Temp files are hidden and pid-tagged (``.<name>.tmp-<pid>-<hex>``): readers' globs skip them, and the
local store's repair removes those whose writer is gone.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


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
    return final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    if os.name != "nt":  # directories cannot be opened for fsync on Windows
        fsync_path(path)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_for(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
