"""``migrate --to shards`` through the real CLI on a local store that ``run`` made in the files
layout (LAYOUT=files, the bundled samples, the planar predictor): killed with kill -9 after its
second step, then run again, it leaves every item once in shards (photos byte for byte, SPZ made
from each PLY), no old per-item file, a clean ``verify --deep``, the ``shards`` marker, and a later
``run`` over the same photos publishes nothing new."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from e2e_utils import read_rows, run_cli
from migrate_checks import check_migrated, check_retargeted_card, migrate_killed_after_step, predecessor_files

from sharp_dataset_pipeline.publish.shard_read import ItemReader
from sharp_dataset_pipeline.records import IndexRow
from sharp_dataset_pipeline.splat.ply import validate_ply
from sharp_dataset_pipeline.stores.local import LocalStore


def test_a_files_layout_store_migrates_to_shards_across_a_kill(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    store = f"local:{ds}"
    made = run_cli(tmp_path, "run", "--source", "samples", "--predictor", "planar", "--store", store,
                   "--planar-resolution", "48", LAYOUT="files")
    assert made.returncode == 0, made.stderr[-3000:]
    before = read_rows(ds)
    assert len(before) == 6 and all(r["ply_path"] and not r["shard_path"] for r in before)
    old_files = sorted(p.relative_to(ds).as_posix() for p in ds.rglob("*")
                       if p.is_file() and p.relative_to(ds).parts[0] == "folder")
    assert len(old_files) == 18  # photo, PLY and preview per item
    photo_sha = {r["id"]: r["image_sha256"] for r in before}
    gaussians = {r["id"]: validate_ply(ds / r["ply_path"]).count for r in before}
    typed = datasets.load_dataset(str(ds), split="train", cache_dir=str(tmp_path / "c1"))  # the files layout's twins
    assert sorted(typed["id"]) == sorted(photo_sha) and set(typed["layout"]) == {"files"}
    assert {type(r["preview"]).__name__ for r in typed} == {"WebPImageFile"}

    migrate_killed_after_step(tmp_path, store, 2, "--step-items", "1")
    mixed = {r["id"]: r for r in read_rows(ds)}
    assert len(mixed) == 6 and 2 <= sum(1 for r in mixed.values() if r["shard_path"]) < 6  # mixed, none lost
    assert json.loads((ds / ".coord" / "layout.json").read_text()) == {"layout": "files"}
    for row in mixed.values():  # each item's bytes are in its shards or still in its files
        shards, files = [row["shard_path"], row["ply_shard_path"]], [row["image_path"], row["ply_path"]]
        named = shards if row["shard_path"] else files
        assert all((ds / p).is_file() for p in named), (row["id"], named)
    reader = ItemReader(lambda p: ds / p)  # readers take both kinds of rows meanwhile
    for row in (IndexRow.from_dict(r) for r in mixed.values()):
        assert hashlib.sha256(reader.photo(row)).hexdigest() == photo_sha[row.id]

    repaired = LocalStore(ds)  # its crash repair (any open) settles a step the kill cut short
    repaired.open()
    repaired.close()
    mid = run_cli(tmp_path, "verify", "--deep", "--store", store, "--json")  # a mixed dataset is consistent
    assert mid.returncode == 0 and json.loads(mid.stdout)["problems"] == [], mid.stdout[-3000:]
    parquet = sorted(i for p in (ds / "data" / "index").rglob("*.parquet")
                     for i in pq.read_table(p, columns=["id"]).column("id").to_pylist())
    assert parquet == sorted(photo_sha)  # twins and the shards' index shards: each item once meanwhile

    resumed = run_cli(tmp_path, "migrate", "--to", "shards", "--store", store, "--step-items", "1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "is in the shards layout now" in resumed.stdout, resumed.stdout
    rows = read_rows(ds)
    check_migrated(rows, lambda p: ds / p, photo_sha, gaussians)
    assert not (ds / "folder").exists() and not [p for p in old_files if (ds / p).exists()]
    assert json.loads((ds / ".coord" / "layout.json").read_text()) == {"layout": "shards"}
    assert "config_name: splats" in (ds / "README.md").read_text()  # the card of the shards layout
    assert not (ds / "data" / "index" / "files").exists() and not (ds / ".coord" / "files-index.json").exists()

    deep = run_cli(tmp_path, "verify", "--deep", "--store", store, "--json")
    assert deep.returncode == 0, deep.stdout[-3000:] + deep.stderr[-2000:]
    assert json.loads(deep.stdout)["problems"] == []

    again = run_cli(tmp_path, "run", "--source", "samples", "--predictor", "planar", "--store", store,
                    "--planar-resolution", "48", "--summary-json", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "again.json").read_text())["published"] == 0
    assert sorted(r["id"] for r in read_rows(ds)) == sorted(photo_sha)

    done = run_cli(tmp_path, "migrate", "--to", "shards", "--store", store)
    assert done.returncode == 0 and "nothing to migrate" in done.stdout, done.stdout + done.stderr[-2000:]


def test_a_local_copy_of_a_predecessor_dataset_migrates_and_keeps_its_index(tmp_path: Path) -> None:
    ds = tmp_path / "old"
    ids = [f"Ph{n}oto-y_{n:02d}" for n in range(5)]
    files, photo_sha, counts = predecessor_files(tmp_path, ids, "old/sharp-ply-share")
    for rel, data in files.items():
        (ds / rel).parent.mkdir(parents=True, exist_ok=True)
        (ds / rel).write_bytes(data)
    store = f"local:{ds}"

    migrate_killed_after_step(tmp_path, store, 1, "--step-items", "2")
    copy = ds / ".coord" / "migrate" / "predecessor-train.jsonl"
    assert copy.read_bytes() == files["data/train.jsonl"]  # never clobbered, never lost
    assert sorted(r["id"] for r in read_rows(ds)) == sorted(ids)  # its rows carried into our index

    resumed = run_cli(tmp_path, "migrate", "--to", "shards", "--store", store, "--step-items", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_rows(ds)
    check_migrated(rows, lambda p: ds / p, photo_sha, counts)
    assert not (ds / "unsplash").exists() and copy.read_bytes() == files["data/train.jsonl"]
    by_id = {r["id"]: r for r in rows}
    assert by_id[ids[0]]["tags"] == "sea, sky" and by_id[ids[0]]["source"] == "unsplash"
    check_retargeted_card((ds / "README.md").read_bytes(), ply=any(r["ply_shard_path"] for r in rows))
    index = datasets.load_dataset(str(ds), split="train")  # the retargeted default config: the index
    assert sorted(index["id"]) == sorted(ids)
    assert {type(r["preview"]).__name__ for r in index} == {"WebPImageFile"}  # previews decode as images
    assert json.loads((ds / ".coord" / "layout.json").read_text()) == {"layout": "shards"}
    deep = run_cli(tmp_path, "verify", "--deep", "--store", store, "--json")
    assert deep.returncode == 0 and json.loads(deep.stdout)["problems"] == [], deep.stdout[-3000:]


def test_migrate_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    missing = run_cli(tmp_path, "migrate", "--to", "shards", "--store", f"local:{tmp_path / 'nothing'}")
    assert missing.returncode == 1 and "error: local:" in missing.stderr and "no dataset there" in missing.stderr
    assert not (tmp_path / "nothing").exists()  # never created
    no_target = run_cli(tmp_path, "migrate", "--store", f"local:{tmp_path}")
    assert no_target.returncode == 2 and "--to" in no_target.stderr
    helped = run_cli(tmp_path, "migrate", "--help")
    assert helped.returncode == 0 and "--step-items" in helped.stdout and "kill -9" in helped.stdout
