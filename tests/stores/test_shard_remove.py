"""`remove` of items that sit inside shards (issue #14), on the local store: the tars rewritten without
the removed samples (or deleted), the kept rows' new members in the JSONL and the Parquet index, the
exclusion kept, `verify --deep` clean, `webdataset` reading exactly the kept samples, and a kill -9
in the middle of a remove leaving the store either untouched or fully removed after a reopen."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import webdataset as wds

from e2e.e2e_utils import run_cli
from sharp_dataset_pipeline.publish.index import decode_rows
from sharp_dataset_pipeline.publish.parquet_index import read_index, row_members
from sharp_dataset_pipeline.records import Batch, IndexRow
from sharp_dataset_pipeline.stores.local import LocalStore
from stores.shard_items import planar_items

STEP1 = ["a1", "a2", "a3"]
STEP2 = ["b1", "b2"]


def _publish(tmp: Path) -> tuple[LocalStore, Path]:
    root = tmp / "s"
    store = LocalStore(root, new_layout="shards")
    store.open()
    for n, ids in enumerate((STEP1, STEP2)):
        receipt = store.publish(Batch(client_id="c", items=planar_items(tmp / f"w{n}", ids)))
        assert sorted(receipt.published_ids) == ids
    return store, root


def tar_digests(path: Path) -> dict[str, str]:
    """Member name -> sha256 of its bytes, read with tarfile."""
    with tarfile.open(path) as tf:
        return {m.name: hashlib.sha256(tf.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                for m in tf.getmembers() if m.isfile()}


def parquet_entries(root: Path) -> dict[str, object]:
    out = {}
    for path in sorted((root / "data" / "index").rglob("*.parquet")):
        with path.open("rb") as fh:
            for e in read_index(fh):
                assert e.row.id not in out
                out[e.row.id] = e
    return out


def jsonl_rows(root: Path) -> dict[str, IndexRow]:
    out: dict[str, IndexRow] = {}
    for path in sorted((root / "data").glob("*.jsonl")):
        for row in decode_rows(path.read_bytes()):
            assert row.id not in out
            out[row.id] = row
    return out


def assert_removed(root: Path, gone: list[str], kept: list[str]) -> None:
    """The positive outcome of a takedown, read from the files themselves."""
    rows = jsonl_rows(root)
    assert sorted(rows) == sorted(kept)
    entries = parquet_entries(root)
    assert sorted(entries) == sorted(kept)
    tars = sorted((root / "data").rglob("*.tar"))
    names = {n for t in tars for n in tar_digests(t)}
    assert not any(n.split(".", 1)[0] in gone for n in names)  # no member of a removed sample anywhere
    for item_id in kept:
        row = rows[item_id]
        assert entries[item_id].members == tuple(sorted(row_members(row), key=lambda m: (m.field, m.shard)))
        for m in row_members(row):  # each kept member where its row says, with the row's sha256
            digests = tar_digests(root / m.shard)
            assert digests[m.name] == m.sha256
            with (root / m.shard).open("rb") as fh:
                fh.seek(m.offset)
                assert hashlib.sha256(fh.read(m.size)).hexdigest() == m.sha256
    samples = list(wds.WebDataset([str(t) for t in tars if "/shards/" in t.as_posix()], shardshuffle=False))
    assert sorted(json.loads(s["json"])["id"] for s in samples) == sorted(kept)
    report = LocalStore(root).admin().verify(time.time(), deep=True)
    assert report.problems == [] and report.rows == len(kept)


@pytest.mark.parametrize("compacted", [False, True])
def test_remove_rewrites_the_shards_without_the_item(tmp_path: Path, compacted: bool) -> None:
    store, root = _publish(tmp_path)
    if compacted:
        assert store.compact() == 5
    before = jsonl_rows(root)
    shard, ply_shard = before["a2"].shard_path, before["a2"].ply_shard_path
    assert shard and ply_shard and "a2.spz" in {n for n in (m.name for m in row_members(before["a2"]))}
    old_index = {p.relative_to(root).as_posix() for p in (root / "data" / "index").rglob("*.parquet")}
    preview = store.admin().preview_remove(["a2"], time.time())
    assert preview.removed == ["a2"] and sorted(preview.shards_rewritten) == sorted([shard, ply_shard])
    assert "rewrite shard " + shard in preview.text() and not preview.files_deleted
    assert set(preview.index_files_rewritten) & old_index  # the Parquet file holding a2's step
    assert jsonl_rows(root) == before  # a preview changes nothing

    result = store.admin().remove(["a2"], "takedown request", time.time())
    assert result.removed == ["a2"] and sorted(result.shards_rewritten) == sorted([shard, ply_shard])
    assert "2 shards rewritten" in result.text()
    assert_removed(root, ["a2"], ["a1", "a3", *STEP2])
    after = jsonl_rows(root)
    assert after["a1"].members != before["a1"].members or after["a3"].members != before["a3"].members
    assert after["b1"] == before["b1"]  # another step's rows are untouched
    assert not [p for p in (root / ".coord" / "staging").rglob("*") if p.is_file()]  # nothing staged is left

    # a rerun over the same photos publishes nothing again, and never a2
    again = store.publish(Batch(client_id="c", items=planar_items(tmp_path / "w9", STEP1)))
    assert "a2" not in again.published_ids and "a2" not in {r.id for r in store.rows()}
    assert store.item_states(["a2"])["a2"].excluded
    assert_removed(root, ["a2"], ["a1", "a3", *STEP2])


def test_removing_every_item_of_a_step_deletes_its_shards_and_index_shard(tmp_path: Path) -> None:
    store, root = _publish(tmp_path)
    rows = jsonl_rows(root)
    tars = [rows["b1"].shard_path, rows["b1"].ply_shard_path]
    result = store.admin().remove(STEP2, "", time.time())
    assert sorted(result.removed) == STEP2 and result.shards_rewritten == []
    assert set(tars) <= set(result.files_deleted) and not any((root / t).exists() for t in tars)
    assert_removed(root, STEP2, STEP1)


def test_remove_through_the_cli_on_a_sharded_dataset(tmp_path: Path) -> None:
    store, root = _publish(tmp_path)
    store.close()
    dry = run_cli(tmp_path, "remove", "a1", "b2", "--dry-run", "--store", f"local:{root}")
    assert dry.returncode == 0, dry.stderr
    assert "rewrite shard data/shards/" in dry.stdout and "nothing was changed" in dry.stdout
    done = run_cli(tmp_path, "remove", "a1", "b2", "--reason", "request", "--store", f"local:{root}")
    assert done.returncode == 0, done.stderr
    assert "removed 2 items" in done.stdout and "4 shards rewritten" in done.stdout
    assert_removed(root, ["a1", "b2"], ["a2", "a3", "b1"])
    verify = run_cli(tmp_path, "verify", "--deep", "--store", f"local:{root}")
    assert verify.returncode == 0, verify.stdout + verify.stderr


KILL_DURING_REMOVE = r'''
import os, signal, sys, time
from pathlib import Path
from sharp_dataset_pipeline.stores import local_remove, local_shard_remove
from sharp_dataset_pipeline.stores.local import LocalStore

root, point = Path(sys.argv[1]), sys.argv[2]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if point == "rewriting":  # the new tars are written, the Parquet files not yet: nothing is recorded
    local_shard_remove._stage_index = die
elif point == "staged":  # the new tars and Parquet files are staged; the transaction is open, not committed
    local_remove.record_takedown = die
else:  # committed; the first staged file renamed into place, the rest not yet
    carry = local_shard_remove._carry_out
    def half(root, entries):
        carry(root, entries[:1])
        die()
    local_shard_remove._carry_out = half
store = LocalStore(root)
store.open()
store.admin().remove(["a2"], "killed", time.time())
'''


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("point", ["rewriting", "staged", "carrying_out"])
def test_kill9_during_remove_leaves_the_store_consistent(tmp_path: Path, point: str) -> None:
    store, root = _publish(tmp_path)
    store.close()
    before = jsonl_rows(root)
    digests = {t.relative_to(root).as_posix(): tar_digests(t) for t in (root / "data").rglob("*.tar")}
    script = tmp_path / "kill.py"
    script.write_text(KILL_DURING_REMOVE)
    done = subprocess.run([sys.executable, str(script), str(root), point], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [p for p in (root / ".coord" / "staging").rglob("*") if p.is_file()]  # the kill left staged files
    reopened = LocalStore(root)
    reopened.open()  # crash repair
    assert not [p for p in (root / ".coord" / "staging").rglob("*") if p.is_file()]
    assert not list((root / ".coord" / "staging").glob(".takedown*"))  # nor a scratch folder
    if point != "carrying_out":  # untouched: every row, member and Parquet entry as before
        assert jsonl_rows(root) == before and sorted(parquet_entries(root)) == sorted(before)
        assert {t.relative_to(root).as_posix(): tar_digests(t) for t in (root / "data").rglob("*.tar")} == digests
        assert not reopened.item_states(["a2"])["a2"].excluded
        report = reopened.admin().verify(time.time(), deep=True)
        assert report.problems == [] and report.rows == 5
    else:  # fully removed, rolled forward
        assert reopened.item_states(["a2"])["a2"].excluded
        assert_removed(root, ["a2"], ["a1", "a3", *STEP2])
    # and a remove afterwards finishes (or repeats harmlessly) the takedown
    reopened.admin().remove(["a2"], "again", time.time())
    assert_removed(root, ["a2"], ["a1", "a3", *STEP2])


def test_a_rerun_of_the_same_photos_after_a_remove_publishes_nothing_again(tmp_path: Path) -> None:
    """Through the CLI: `run` on the bundled photos (sharded), `remove` one that shares its shard with
    the others, `run` again: the removed photo is skipped as excluded, nothing is published twice."""
    root = tmp_path / "out"
    args = ("run", "--source", "samples", "--predictor", "planar", "--planar-resolution", "32",
            "--store", f"local:{root}")
    first = run_cli(tmp_path, *args, LAYOUT="shards")
    assert first.returncode == 0, first.stderr
    rows = jsonl_rows(root)
    victim = sorted(rows)[1]
    assert sum(r.shard_path == rows[victim].shard_path for r in rows.values()) > 1  # it shares its shard
    done = run_cli(tmp_path, "remove", victim, "--store", f"local:{root}")
    assert done.returncode == 0, done.stderr
    kept = sorted(i for i in rows if i != victim)
    assert_removed(root, [victim], kept)
    again = run_cli(tmp_path, *args, "--redo", "all")  # every unit reopened: each photo considered again
    assert again.returncode == 0, again.stderr
    # the kept ones replaced, the removed one considered and skipped
    assert f"published {len(kept)}," in again.stdout and "removed: 1" in again.stdout
    assert_removed(root, [victim], kept)
