"""The local store and a predecessor's index at its index path: compaction (which writes that file
from the ledger) refuses to clobber it, and a migration keeps its bytes and takes its rows in."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.stores.local import LocalStore
from sharp_dataset_pipeline.stores.local_migrate import LocalMigration

LINE = b'{"image_id": "abc", "jpg_sha256": "", "gsplat_order_id": "o1", "tags_text": "sea"}\n'


def test_compaction_refuses_a_predecessor_index_and_migration_takes_it_in(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_bytes(LINE)
    store = LocalStore(tmp_path)
    store.open()
    assert store.layout == "files"
    with pytest.raises(StoreError, match="predecessor's index"):
        store.compact()
    assert (tmp_path / "data" / "train.jsonl").read_bytes() == LINE

    rows = LocalMigration(store, "mover").rows()
    assert [(r.id, r.image_path, r.unit) for r in rows] == [("abc", "unsplash/abc/abc.jpg", "predecessor")]
    assert (tmp_path / ".coord" / "migrate" / "predecessor-train.jsonl").read_bytes() == LINE
    assert not (tmp_path / "data" / "train.jsonl").exists()
    assert [r.id for r in LocalMigration(store, "mover").rows()] == ["abc"]  # taken in once
    assert store.compact() == 1  # our own index file now
    store.close()
