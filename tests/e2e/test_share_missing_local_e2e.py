"""``share --missing`` on the local store through the real CLI and the gsplat emulator: the share fields
of many items reach the index files with a bounded number of index rewrites, not one full
compaction per item (which made the command quadratic in the size of the dataset)."""

from __future__ import annotations

import re
from pathlib import Path

from e2e_utils import check_consistent, make_photos, read_rows, run_cli

from emulators.gsplat import GsplatEmulator

COMPACTION_LOG = re.compile(r"compacted \d+ shards; index has \d+ rows")


def _run(tmp_path: Path, photos: Path, run_id: str) -> None:
    done = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", "local:out",
                   "--run-id", run_id, "--planar-resolution", "24", "--batch-size", "4")
    assert done.returncode == 0, done.stderr[-3000:]


def test_share_missing_updates_the_index_in_one_pass_not_once_per_item(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 10, seed=21)
    _run(tmp_path, photos, "r1")
    compacted = run_cli(tmp_path, "compact", "--store", "local:out")
    assert compacted.returncode == 0, compacted.stderr[-2000:]
    make_photos(photos, 6, seed=22)  # these stay in index shards (not compacted)
    _run(tmp_path, photos, "r2")
    store = tmp_path / "out"
    assert len(read_rows(store)) == 16 and not any(r["gsplat_share_id"] for r in read_rows(store))
    shards_before = sorted(p.name for p in (store / "data").glob("train-shard-*.jsonl"))
    assert shards_before

    with GsplatEmulator() as emu:
        shared = run_cli(tmp_path, "share", "--missing", "--store", "local:out", GSPLAT_BASE=emu.base_url,
                         GSPLAT_ALLOW_PRIVATE_BASE="1", GSPLAT_FILTER_VISIBILITY="200", LOG_LEVEL="DEBUG")
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert "shared 16, already shared 0, failed 0" in shared.stdout
    # Every row, compacted or in a shard, shows its share in the index files.
    rows = check_consistent(store)
    assert len(rows) == 16 and all(r["gsplat_share_id"] and r["gsplat_url"] for r in rows)
    # The 10 compacted rows cost one rewrite of the index, not ten compactions.
    compactions = COMPACTION_LOG.findall(shared.stderr)
    assert len(compactions) == 1, compactions
