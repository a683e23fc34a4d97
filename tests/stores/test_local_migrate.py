"""``migrate`` on the local store: a predecessor's index at the index path is never clobbered by
compaction (which writes that file from the ledger) and is taken into the ledger with its bytes kept;
an item removed while its step is packed gets no shard row, and the step's tars land all the same."""

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


def test_an_item_removed_while_its_step_is_packed_gets_no_shard_row(tmp_path: Path) -> None:
    from sharp_dataset_pipeline.ops.migrate_items import stage_item
    from sharp_dataset_pipeline.records import Batch
    from sharp_dataset_pipeline.stores.shard_packer import ShardPacker
    from stores.shard_items import planar_items

    store = LocalStore(tmp_path / "ds", dataset_layout="files")
    store.open()
    store.publish(Batch(client_id="c1", items=planar_items(tmp_path / "items", ["a0", "a1"],
                                                           formats=("ply", "preview"))))
    migration = LocalMigration(store, "mover")
    rows = migration.rows()
    staged = [stage_item(r, migration.local_path, tmp_path / "stage") for r in rows]
    packed, _ = ShardPacker(tmp_path / "packs", "migrate", 10**9).pack(staged)
    assert packed is not None and packed.items[0].row.id == "a0"  # the item that carries the tars
    store.admin().remove(["a0"], "takedown", 0.0)
    step = migration.land_step(packed, rows)
    assert step.migrated_ids == ["a1"]
    (row,) = [r for r in store.rows()]
    assert row.id == "a1" and (store.root / row.shard_path).is_file()  # its tar placed all the same
    store.close()


def test_an_item_whose_file_is_gone_fails_alone_and_keeps_the_layout_files(tmp_path: Path) -> None:
    from sharp_dataset_pipeline.ops.migrate import MigrateRun, migrate_to_shards
    from sharp_dataset_pipeline.records import Batch
    from stores.shard_items import planar_items

    store = LocalStore(tmp_path / "ds", dataset_layout="files")
    store.open()
    store.publish(Batch(client_id="c1", items=planar_items(tmp_path / "items", ["b0", "b1", "b2"],
                                                           formats=("ply", "preview"))))
    gone = next(r for r in store.rows() if r.id == "b1")
    (store.root / gone.ply_path).unlink()
    result = migrate_to_shards(LocalMigration(store, "mover"), tmp_path / "work", MigrateRun(step_items=2))
    assert result.migrated == 2 and list(result.failed) == ["b1"] and not result.finished
    rows = {r.id: r for r in store.rows()}
    assert rows["b1"].image_path and not rows["b1"].shard_path and rows["b0"].shard_path and rows["b2"].shard_path
    assert (store.root / rows["b1"].image_path).is_file() and store.layout == "files"
    store.close()
