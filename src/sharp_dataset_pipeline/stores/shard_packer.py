"""One store step's new items packed into shards, once per item set, a refused item failing alone.

Both stores pack inside their publish step (``publish.shard_pack.pack_batch``); this is the shared
wrapper that keeps invariant 8 (one bad input fails alone) and the packed files' lifetime.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from ..errors import PermanentError, StoreError
from ..publish.shard_layout import batch_digest
from ..publish.shard_pack import PackedBatch, content_salt, pack_batch
from ..records import Failure, ProcessedItem
from .item_checks import publish_failure


class ShardPacker:
    """Packs the new items of one publish step, once per distinct item set (keyed by batch digest).

    An item that cannot be packed (``pack_batch`` refuses it) fails alone (invariant 8): the set is
    then packed item by item to find it, and packed again without it. ``clear`` removes the packed
    files once the step is over (landed or given up).
    """

    def __init__(self, work_dir: Path, client_id: str, max_shard_bytes: int) -> None:
        self._work_dir, self._client, self._max = work_dir, client_id, max_shard_bytes
        self._packed: dict[str, tuple[PackedBatch | None, list[Failure]]] = {}

    def pack(self, items: list[ProcessedItem]) -> tuple[PackedBatch | None, list[Failure]]:
        """The packed items (``None`` when none could be packed) and a failure per refused item."""
        key = batch_digest(self._client, (pi.row.id for pi in items), salt=content_salt(items))
        found = self._packed.get(key)
        if found is None:
            try:
                found = (pack_batch(items, self._client, self._work_dir / key, max_shard_bytes=self._max), [])
            except (PermanentError, StoreError):
                found = self._pack_without_refused(items, key)
            self._packed[key] = found
        return found

    def _pack_without_refused(self, items: list[ProcessedItem], key: str) -> tuple[PackedBatch | None, list[Failure]]:
        good, failed = [], []
        probe = self._work_dir / f"scratch-probe-{key}"
        for pi in items:
            try:
                pack_batch([pi], self._client, probe, max_shard_bytes=self._max)
            except (PermanentError, StoreError) as exc:
                reason = exc.reason if isinstance(exc, PermanentError) else "bad_metadata"
                failed.append(publish_failure(pi, reason, str(exc), transient=False))
            else:
                good.append(pi)
            finally:
                shutil.rmtree(probe, ignore_errors=True)
        if not good:
            return None, failed
        return pack_batch(good, self._client, self._work_dir / key, max_shard_bytes=self._max), failed

    def scratch(self, name: str) -> Path:
        """A folder for one step's other files (compaction's merged index), removed by ``clear``."""
        return self._work_dir / f"scratch-{name[:16]}"

    def clear(self) -> None:
        """Remove this step's packed files and scratch folders, and the work folder once empty."""
        for key in self._packed:
            shutil.rmtree(self._work_dir / key, ignore_errors=True)
        self._packed.clear()
        for path in self._work_dir.glob("scratch-*"):
            shutil.rmtree(path, ignore_errors=True)
        # The folder itself goes too when nothing else is in it (packing makes it again), so a
        # store's staging area does not fill with one empty folder per publish step.
        with contextlib.suppress(OSError):
            self._work_dir.rmdir()
