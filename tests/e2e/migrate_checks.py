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

import numpy as np
import webdataset as wds
from e2e_utils import cli_cmd, cli_env, make_photos

from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import encode_ply
from sharp_dataset_pipeline.splat.spz import decode_spz

# The predecessor's card is its own README, with YAML ``configs`` naming its JSONL index.
HAND_CARD = (b"---\nlicense: other\npretty_name: SHARP PLY share\nconfigs:\n- config_name: default\n"
             b"  data_files:\n  - split: train\n    path: data/train.jsonl\n---\n# SHARP PLY share\n\n"
             b"Written by hand.\n")


def check_retargeted_card(card: bytes, ply: bool) -> None:
    """A hand-written card after migration: its text and keys kept, its configs the sharded layout's."""
    from huggingface_hub import DatasetCard

    parsed = DatasetCard(card.decode())
    assert parsed.text == "# SHARP PLY share\n\nWritten by hand.\n"
    data = parsed.data.to_dict()
    assert data["license"] == "other" and data["pretty_name"] == "SHARP PLY share"
    configs = {c["config_name"]: c for c in data["configs"]}
    assert sorted(configs) == sorted(["index", "splats", *(["ply"] if ply else [])])
    assert configs["index"]["default"] is True
    assert configs["index"]["data_files"] == [{"split": "train", "path": "data/index/**/*.parquet"}]
    assert configs["splats"]["data_files"] == [{"split": "train", "path": "data/shards/**/*.tar"}]


def _ply(n: int, seed: int) -> bytes:
    """A small scene in SHARP's layout (vertex block + SHARP's metadata elements)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 14)).astype(np.float32) * 0.3
    v[:, 2] = rng.uniform(1.0, 8.0, n)
    return encode_ply(Gaussians(vertices=v, focal_px=400.0, width=96, height=64))


def predecessor_files(tmp: Path, ids: list[str], repo: str,
                      big: int = -1) -> tuple[dict[str, bytes], dict[str, str], dict[str, int]]:
    """A dataset as the predecessor published it: per photo ``unsplash/<id>/<id>.jpg|.ply|.spz`` and one
    compact row in ``data/train.jsonl`` (resolve URL, hashes, sizes), and a hand-written card; item
    ``big`` gets a PLY over 10 MB (the Hub sends such files through LFS).
    Returns (repo path -> bytes, id -> photo sha256, id -> Gaussians in its PLY)."""
    photos = make_photos(tmp / "photos", len(ids), seed=5)
    files: dict[str, bytes] = {}
    lines, photo_sha, counts = [], {}, {}
    for n, (item_id, photo) in enumerate(zip(ids, photos, strict=True)):
        count = 200_000 if n == big else 200 + 37 * n
        jpg, ply = photo.read_bytes(), _ply(count, n)
        photo_sha[item_id], counts[item_id] = hashlib.sha256(jpg).hexdigest(), count
        base = f"unsplash/{item_id}/{item_id}"
        files.update({f"{base}.jpg": jpg, f"{base}.ply": ply, f"{base}.spz": b"an spz of another converter"})
        lines.append(json.dumps({
            "image": f"https://huggingface.co/datasets/{repo}/resolve/main/{base}.jpg", "image_id": item_id,
            "jpg_sha256": photo_sha[item_id], "ply_sha256": hashlib.sha256(ply).hexdigest(), "spz_sha256": "",
            "jpg_bytes": len(jpg), "ply_bytes": len(ply), "spz_bytes": 27, "gsplat_order_id": f"o{n}",
            "tags": "sea sky", "tags_text": "sea sky", "alt_description": "a view",
            "created_at": "2021-05-06T07:08:09Z", "user_username": "ann"}))
    files["data/train.jsonl"] = ("\n".join(lines) + "\n").encode()
    files["README.md"] = HAND_CARD
    return files, photo_sha, counts


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
