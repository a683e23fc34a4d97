"""Shared by the ``migrate --to shards`` end-to-end tests: a migration killed with kill -9 after a
given step, and the checks of a migrated dataset's shards read back with the ``webdataset`` library."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import webdataset as wds
from e2e_utils import cli_cmd, cli_env

from sharp_dataset_pipeline.splat.spz import decode_spz


def migrate_killed_after_step(cwd: Path, store: str, step: int, *extra: str, **env: str) -> str:
    """Run ``migrate --to shards`` and kill -9 it as soon as it reports step ``step`` landed (it is then
    inside the next step: staging, packing, uploading or committing). Returns what it printed."""
    proc = subprocess.Popen(cli_cmd("migrate", "--to", "shards", "--store", store, *extra), cwd=cwd,
                            env=cli_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(f"step {step}/"):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    out = "".join(seen)
    assert proc.returncode == -signal.SIGKILL, f"migrate ended before it was killed (rc {proc.returncode}):\n{out}"
    return out


def check_migrated(rows: list[dict], shard_file: Callable[[str], Path], photo_sha: dict[str, str],
                   gaussians: dict[str, int]) -> None:
    """Every item once, in shards; each sample read by ``webdataset`` from the tars its row names:
    the photo's bytes are the original's (sha256) and its SPZ decodes to the PLY's Gaussian count."""
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(photo_sha) and len(ids) == len(set(ids)), ids
    assert all(r["shard_path"].startswith("data/shards/") and r["image_path"] == "" for r in rows)
    tars = sorted({r["shard_path"] for r in rows})
    samples = {s["__key__"]: s for s in wds.WebDataset([str(shard_file(t)) for t in tars], shardshuffle=False)}
    assert len(samples) == len(rows)  # every sample of every tar, and no other
    for row in rows:
        sample = samples[row["shard_key"]]
        photo = next(m for m in json.loads(row["members"]) if m["field"] in ("jpg", "png"))
        assert hashlib.sha256(sample[photo["field"]]).hexdigest() == photo_sha[row["id"]] == photo["sha256"]
        assert decode_spz(sample["spz"]).scene.count == gaussians[row["id"]] == row["num_gaussians"]
        assert json.loads(sample["json"])["id"] == row["id"]
