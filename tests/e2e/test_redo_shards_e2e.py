"""The real CLI in the sharded layout (the default): `run` with the planar predictor, then `run --redo
all` over the same photos, on a local store and on the loopback Hub (issue #14). Every item is replaced:
one JSONL row and one Parquet entry per id (the new ones), each sample key once in the tars, the old
tars gone, `verify --deep` clean and `webdataset` reading exactly N samples."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path

import webdataset as wds
from e2e_utils import make_photos, run_cli

from emulators.hub import HubEmulator, index_rows
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES
from sharp_dataset_pipeline.publish.parquet_index import read_index
from stores.shard_items import tar_keys

N = 5
REPO = "crowd/redo"
TOKEN = "hf_e2eredotoken0123456789"


def _run(tmp: Path, photos: Path, store: str, *extra: str, **env: str) -> str:
    done = run_cli(tmp, "run", "--source", f"folder:{photos}", "--predictor", "planar", "--planar-resolution", "32",
                   "--store", store, *extra, CLIENT_ID="e2e", **env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _check(files: dict[str, bytes], before: dict[str, dict], tmp: Path) -> None:
    """``files``: repo path -> bytes. Every id once everywhere, each row newer than ``before``'s."""
    rows = index_rows(files)
    assert Counter(r["id"] for r in rows) == Counter({i: 1 for i in before})
    parquet = [e.row for p in sorted(files) if p.startswith("data/index/") and p.endswith(".parquet")
               for e in read_index(io.BytesIO(files[p]))]
    assert Counter(r.id for r in parquet) == Counter({i: 1 for i in before})
    for row in rows:
        assert row["processed_at"] > before[row["id"]]["processed_at"]  # the new row, not the old one
        assert row["shard_path"] != before[row["id"]]["shard_path"]
    assert {r.id: r.processed_at for r in parquet} == {r["id"]: r["processed_at"] for r in rows}
    old_tars = {r[k] for r in before.values() for k in ("shard_path", "ply_shard_path") if r.get(k)}
    assert not old_tars & set(files)  # every sample of those tars was replaced: the tars are gone
    tars = sorted(p for p in files if p.startswith("data/shards/") and p.endswith(".tar"))
    assert Counter(k for p in tars for k in tar_keys(files[p])) == Counter({i: 1 for i in before})
    local = []
    for n, path in enumerate(tars):
        local.append(tmp / f"read-{n}.tar")
        local[-1].write_bytes(files[path])
    samples = list(wds.WebDataset([str(p) for p in local], shardshuffle=False))
    assert sorted(json.loads(s["json"])["id"] for s in samples) == sorted(before)


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in (root / "data").rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def test_redo_all_replaces_every_item_on_a_local_sharded_store(tmp_path: Path) -> None:
    photos, root = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, N, seed=4)
    first = _run(tmp_path, photos, f"local:{root}")
    assert f"published {N}," in first
    before = {r["id"]: r for r in index_rows(_local_files(root))}
    assert len(before) == N and all(r["shard_path"] for r in before.values())
    time.sleep(1.1)  # processed_at has one-second resolution
    redo = _run(tmp_path, photos, f"local:{root}", "--redo", "all")
    assert f"published {N}," in redo and "not replaced" not in redo + first
    _check(_local_files(root), before, tmp_path)
    verify = run_cli(tmp_path, "verify", "--deep", "--store", f"local:{root}")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_redo_all_replaces_every_item_on_the_hub(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, N, seed=6)
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        hub.create(REPO)
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "HF_HUB_DISABLE_XET": "1"}
        assert f"published {N}," in _run(tmp_path, photos, f"hf:{REPO}", **env)
        before = {r["id"]: r for r in index_rows(hub.files(REPO))}
        assert len(before) == N
        time.sleep(1.1)
        assert f"published {N}," in _run(tmp_path, photos, f"hf:{REPO}", "--redo", "all", **env)
        _check(hub.files(REPO), before, tmp_path)
        verify = run_cli(tmp_path, "verify", "--deep", "--store", f"hf:{REPO}", **env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
