"""``migrate --to shards`` on the Hub store (``stores/hub_migrate.py`` driven by ``ops/migrate.py``),
against the loopback Hub with the real client: a files-layout repo published by the store itself
moves over in commits of at most ``max_ops`` files, no old file is deleted before the commit after
the one that landed its shards, a 500 after an applied commit and a 412 neither lose nor duplicate
an item, and an item whose file does not match its row stays in the files layout, named."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from emulators.hub import HubEmulator, HubFaults, ManualClock, index_rows
from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.ops.migrate import MigrateRun, migrate_to_shards
from sharp_dataset_pipeline.ops.migrate_items import stage_item
from sharp_dataset_pipeline.publish.files_index import is_twin_path
from sharp_dataset_pipeline.publish.index import row_files
from sharp_dataset_pipeline.publish.parquet_index import read_ids
from sharp_dataset_pipeline.records import Batch, IndexRow
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore
from sharp_dataset_pipeline.stores.hub_migrate import HubMigration
from sharp_dataset_pipeline.stores.shard_packer import ShardPacker
from stores.shard_items import members, planar_items, tar_keys

REPO = "tester/to-migrate"
TOKEN = "hf_migratetesttoken00000"
IDS = [f"item{n}" for n in range(7)]


def _store(hub: HubEmulator, clock: ManualClock, tmp: Path, layout: str = "") -> HubStore:
    store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id="c1", cache_dir=tmp / "cache",
                                state_max_age_s=0.0, retry_base_s=0.5, layout=layout, new_layout="files"),
                     clock=clock, sleep=clock.sleep)
    store.open()
    return store


def _files_repo(hub: HubEmulator, clock: ManualClock, tmp: Path) -> dict[str, list[str]]:
    """A files-layout repo (photo, PLY, preview per item) in two publish steps; id -> its files."""
    store = _store(hub, clock, tmp, layout="files")
    items = planar_items(tmp / "items", IDS, formats=("ply", "preview"))
    for part in (items[:4], items[4:]):
        assert len(store.publish(Batch(client_id="c1", items=part)).published_ids) == len(part)
    store.close()
    return {r["id"]: row_files(IndexRow.from_dict(r)) for r in index_rows(hub.files(REPO))}


def _rows(hub: HubEmulator) -> list[IndexRow]:
    return [IndexRow.from_dict(r) for r in index_rows(hub.files(REPO))]


def _shard_rows_at(hub: HubEmulator, sha: str) -> set[str]:
    return {r["id"] for r in index_rows(hub.files(REPO, rev=sha)) if r.get("shard_path")}


def test_a_files_repo_migrates_in_bounded_commits_deleting_old_files_only_after_their_shards(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        old = _files_repo(hub, clock, tmp_path)
        assert len(old) == 7 and all(len(paths) == 3 for paths in old.values())
        old_rows = _rows(hub)
        twins = {p: read_ids(io.BytesIO(b)) for p, b in hub.files(REPO).items() if is_twin_path(p)}
        assert sorted(i for ids in twins.values() for i in ids) == IDS  # the files layout's typed index
        started = len(hub.history(REPO))
        hub.set_faults(HubFaults(script=[None, "500-after", 412]))  # step 2's answer lost, step 3 refused once
        store = _store(hub, clock, tmp_path)
        migration = HubMigration(store, "mover", clock=clock, max_ops=10)
        result = migrate_to_shards(migration, tmp_path / "work", MigrateRun(step_items=3))
        store.close()
        assert result.finished and result.migrated == 7 and not result.failed
        assert hub.stats["commit_500_after_apply"] == 1
        assert result.deleted == 7  # every old item folder (its photo, PLY and preview), each once
        cached = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "cache").rglob("*") if p.is_file()}
        plys = {r.ply_sha256 for r in old_rows}
        assert len(plys) == 6 and not cached & plys  # (7 items of 6 sample photos) the downloaded PLYs are gone

        commits = hub.history(REPO)[started:]
        assert commits[0].title.startswith("compact 2 index shards")  # first, so each step rewrites one file
        owner = {p: i for i, paths in old.items() for p in paths}
        folders = {p.rsplit("/", 1)[0]: i for p, i in owner.items()}
        for commit in commits:
            assert len(commit.added) + len(commit.deleted) <= 10, commit.title
            # an old file goes only in a commit whose parent already had its item's shard row
            gone = {folders[p.rstrip("/")] for p in commit.deleted if p.rstrip("/") in folders}
            gone |= {owner[p] for p in commit.deleted if p in owner}
            assert gone <= _shard_rows_at(hub, commit.parent), (commit.title, gone)
        assert sorted(p for c in commits for p in c.deleted if p.rstrip("/") in folders) == sorted(
            f + "/" for f in folders)  # each item folder deleted whole, once

        files = hub.files(REPO)
        rows = index_rows(files)
        assert sorted(r["id"] for r in rows) == IDS  # each once, the lost answer and the 412 included
        assert not [p for p in files if p in owner]
        for row in rows:
            assert {m["field"] for m in members(row)} >= {"jpg", "spz", "json", "webp", "ply"}
            assert all(m["shard"] in files for m in members(row))
        tars = [p for p in files if p.startswith("data/shards/")]
        assert sorted(k for t in tars for k in tar_keys(files[t])) == IDS
        assert json.loads(files[".coord/layout.json"]) == {"layout": "shards"}
        assert not [p for p in files if is_twin_path(p)]  # the sharded layout's index holds every row now
        assert "config_name: splats" in files["README.md"].decode()  # the generated card, for shards

        again = _store(hub, clock, tmp_path)
        assert again.layout == "shards"
        rerun = again.publish(Batch(client_id="c2", items=planar_items(tmp_path / "again", IDS)))
        assert rerun.published_ids == []  # the migrated items are done: a later run publishes none
        done = migrate_to_shards(HubMigration(again, "mover", clock=clock), tmp_path / "work2")
        assert done.nothing_to_do and done.migrated == 0
        again.close()


def test_an_item_whose_file_does_not_match_its_row_stays_in_files(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        old = _files_repo(hub, clock, tmp_path)
        ply = next(p for p in old["item2"] if p.endswith(".ply"))
        HfApi(endpoint=hub.url, token=TOKEN).create_commit(
            REPO, [CommitOperationAdd(ply, b"not the PLY its row recorded")], commit_message="damage",
            repo_type="dataset")
        store = _store(hub, clock, tmp_path)
        result = migrate_to_shards(HubMigration(store, "mover", clock=clock), tmp_path / "work",
                                   MigrateRun(step_items=4))
        store.close()
        assert result.migrated == 6 and list(result.failed) == ["item2"] and not result.finished
        assert "is not the file its row recorded" in result.failed["item2"]
        files = hub.files(REPO)
        rows = {r["id"]: r for r in index_rows(files)}
        assert sorted(rows) == IDS and not rows["item2"]["shard_path"]
        assert all(p in files for p in old["item2"])  # its files stay with its row
        assert json.loads(files[".coord/layout.json"]) == {"layout": "files"}  # nothing claims shards


def test_compaction_never_rewrites_a_predecessor_index(tmp_path: Path) -> None:
    """Rewritten in this project's row shape, the predecessor's own fields would be lost: refused."""
    clock = ManualClock()
    line = b'{"image_id": "abc", "jpg_sha256": "", "gsplat_order_id": "o1", "tags_text": "sea"}\n'
    with HubEmulator(clock=clock) as hub:
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo(REPO, repo_type="dataset")
        api.create_commit(REPO, [CommitOperationAdd("data/train.jsonl", line)], commit_message="old",
                          repo_type="dataset")
        store = _store(hub, clock, tmp_path)
        assert store.layout == "files" and store.item_states(["abc"])["abc"].published  # read as a row
        with pytest.raises(StoreError, match="predecessor's index"):
            store.compact()
        store.close()
        assert hub.files(REPO)["data/train.jsonl"] == line


def test_an_item_removed_while_its_step_is_packed_gets_no_shard_row(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        _files_repo(hub, clock, tmp_path)
        store = _store(hub, clock, tmp_path)
        migration = HubMigration(store, "mover", clock=clock)
        rows = [r for r in migration.rows() if r.id in ("item0", "item1")]
        staged = [stage_item(r, migration.local_path, tmp_path / "stage") for r in rows]
        packed, refused = ShardPacker(tmp_path / "packs", "migrate", 10**9).pack(staged)
        assert packed is not None and not refused
        store.admin().remove(["item1"], "takedown", clock())  # lands before the step
        step = migration.land_step(packed, rows)
        store.close()
        assert step.migrated_ids == ["item0"]
        found = {r["id"]: r for r in index_rows(hub.files(REPO))}
        assert "item1" not in found and found["item0"]["shard_path"]


def test_a_big_index_file_is_split_into_step_sized_shards_first(tmp_path: Path) -> None:
    """So that each step rewrites one or two small index files, not the whole index (which made the
    bytes uploaded grow with steps x index size)."""
    clock = ManualClock()
    ids = [f"p{n:04d}" for n in range(300)]
    index = "".join(json.dumps({"image_id": i, "jpg_bytes": 10, "tags": "a b"}) + "\n" for i in reversed(ids)).encode()
    with HubEmulator(clock=clock) as hub:
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo(REPO, repo_type="dataset")
        api.create_commit(REPO, [CommitOperationAdd("data/train.jsonl", index)], commit_message="old",
                          repo_type="dataset")
        started = len(hub.history(REPO))
        store = _store(hub, clock, tmp_path)
        rows = HubMigration(store, "mover", clock=clock).rows()
        store.close()
        assert sorted(r.id for r in rows) == ids  # every row still there, read in either file
        files = hub.files(REPO)
        shards = sorted(p for p in files if p.startswith("data/train-shard-"))
        chunks = [[json.loads(ln)["image_id"] for ln in files[p].decode().splitlines()] for p in shards]
        assert chunks == [ids[k:k + 64] for k in range(0, 256, 64)]  # a step's rows each, in id order
        left = [json.loads(ln)["image_id"] for ln in files["data/train.jsonl"].decode().splitlines()]
        assert sorted(left) == ids[256:]  # lines kept as they were (a predecessor's stay its own)
        assert files[".coord/migrate/predecessor-train.jsonl"] == index  # copied before any line moved
        splits = [c for c in hub.history(REPO)[started:] if c.title.startswith("migrate: split")]
        assert len(splits) == 1 and len(splits[0].added) + len(splits[0].deleted) <= 100
