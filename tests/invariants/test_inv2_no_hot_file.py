"""Invariant 2: no read-modify-write of a shared file on the publish path.

Each publish adds exactly one new, uniquely named index shard; no existing file under the
index folder (shards, compacted index) and not the card is rewritten or replaced, not even
with identical bytes (the inode would change). Only ``compact()`` rewrites the index.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sharp_dataset_pipeline.records import Batch, Failure, Followup, IndexRow, ProcessedItem, PublishedFile, Unit
from sharp_dataset_pipeline.stores.local import LocalStore


def _item(work: Path, item_id: str) -> ProcessedItem:
    local = work / f"{item_id}.ply"
    local.write_bytes(item_id.encode() * 100)
    size = local.stat().st_size
    row = IndexRow(id=item_id, source="folder", unit="u", ply_path=f"p/{item_id}/{item_id}.ply", ply_size=size)
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    return ProcessedItem(row, [PublishedFile("ply", row.ply_path, local, size, digest)])


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """The index files, their typed twins (``data/index/files``) and the card: name → inode, mtime, hash."""
    twins = root / "data" / "index" / "files"
    files = [*(root / "data").iterdir(), *(twins.iterdir() if twins.is_dir() else []), root / "README.md"]
    return {p.relative_to(root / "data").as_posix() if p.parent != root else p.name:
            (p.stat().st_ino, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in files if p.is_file()}


def test_publish_only_adds_new_shards(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    a, b = LocalStore(tmp_path / "repo"), LocalStore(tmp_path / "repo")
    a.open()
    b.open()
    a.publish(Batch(client_id="a", items=[_item(work, "seed")]))
    a.compact()  # a compacted index exists from here on, and must stay untouched
    before = _snapshot(a.root)
    a.acquire(Unit("u", 0, 1), "a", 60)
    for k in range(8):
        store, client = (a, "a") if k % 2 else (b, "b")
        receipt = store.publish(Batch(
            client_id=client, items=[_item(work, f"i{k}"), _item(work, f"j{k}")],
            failures=[Failure(f"f{k}", "u", "fetch", "timeout", "", True)],
            followups=[Followup("track", f"i{k}", "x")], renew_units=["u"], lease_ttl_s=60))
        after = _snapshot(a.root)
        twin = f"index/files/{receipt.commit.removesuffix('.jsonl')}.parquet"
        assert set(after) - set(before) == {receipt.commit, twin}
        assert {name: after[name] for name in before} == before
        before = after
    # Publishing ids that are already there adds nothing at all.
    b.publish(Batch(client_id="b", items=[_item(work, "i0")]))
    assert _snapshot(a.root) == before
