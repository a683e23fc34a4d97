"""Bytes uploaded per item in the sharded layout's default formats, against the SHARP ``.ply``.

Each item is post-processed as the pipeline does it for ``LAYOUT=shards`` (``PUBLISH_FORMATS``
``spz,preview``: the in-process SPZ, the WebP preview, both made and checked by
``formats.make_extra_files``), with a 1536 x 1024 JPEG photo (quality 90, of a detailed synthetic
picture) and SHARP's camera metadata; then ``publish/shard_pack.pack_batch`` packs a batch of them as
a publish step does. Counted: every byte of the step's files (the tars, headers and padding
included, and the Parquet index shard with its previews) plus its JSONL index rows, divided by the
items; against the 66 MB PLY the per-item layout uploads for the same item (without its photo).

Two 1,179,648-Gaussian scenes (``bench_formats.scene``) bracket real output: ``smooth`` compresses
very well, ``noisy`` badly. Goal (issue 14): bytes per item <= 1/4 of the PLY's size.

    python benchmarks/bench_bytes.py [--quick] [--items 4]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench_formats import HEIGHT, WIDTH, scene
from harness import machine_line
from sharp_dataset_pipeline.pipeline.stages import camera_metadata
from sharp_dataset_pipeline.publish.index import encode_rows
from sharp_dataset_pipeline.publish.layout import item_path
from sharp_dataset_pipeline.publish.shard_pack import pack_batch
from sharp_dataset_pipeline.records import IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.splat.formats import FormatOptions, extra_files_json, make_extra_files
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import write_ply

SHARDS_FORMATS = FormatOptions(formats=("spz", "preview"))  # the sharded layout's default


def photo(path: Path, seed: int) -> int:
    """A detailed 1536 x 1024 JPEG (gradients, edges and fine noise, like a real photo's texture)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.stack([x / WIDTH, y / HEIGHT, 0.5 + 0.5 * np.sin(x / 37.0 + y / 53.0)], -1) * 200
    noise = rng.normal(0, 18, (HEIGHT, WIDTH, 3))
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=90)
    return path.stat().st_size


def _file(kind: str, repo: str, local: Path) -> PublishedFile:
    data = local.read_bytes()
    return PublishedFile(kind, repo, local, len(data), hashlib.sha256(data).hexdigest())


def item(g: Gaussians, item_id: str, work: Path, seed: int) -> ProcessedItem:
    """One item as post-processing hands it to the publisher for the sharded layout."""
    work.mkdir(parents=True, exist_ok=True)
    jpg = work / f"{item_id}.jpg"
    photo(jpg, seed)
    ply = work / f"{item_id}.ply"
    write_ply(g, ply)  # splat-transform-free formats read ``g``; the PLY is the per-item layout's file
    extras = make_extra_files(g, ply, item_id, work, SHARDS_FORMATS)
    image = _file("image", item_path("photos", item_id, "jpg", fanout=False), jpg)
    row = IndexRow(id=item_id, source="bench", unit="bench/0", image_path=image.repo_path, image_size=image.size,
                   image_sha256=image.sha256, width=WIDTH, height=HEIGHT, focal_px=g.focal_px,
                   num_gaussians=g.count, predictor="sharp", model_version="bench", processed_at="2026-01-01T00:00:00Z")
    files = [image]
    entries = []
    for extra in extras:
        repo = item_path("photos", item_id, extra.ext, fanout=False)
        files.append(PublishedFile(extra.kind, repo, extra.local_path, extra.size, extra.sha256))
        entries.append((extra, repo))
    row.extra_files = extra_files_json(entries)
    return ProcessedItem(row, files, camera=camera_metadata(g))


def measure(name: str, g: Gaussians, n: int, work: Path) -> float:
    items = [item(g, f"{name}{k:03d}", work / "items", seed=k) for k in range(n)]
    ply_size = (work / "items" / f"{name}000.ply").stat().st_size
    packed = pack_batch(items, "bench", work / "packed")
    step = sum(f.size for f in packed.files) + len(encode_rows([p.row for p in packed.items]))
    per_item = step / n
    parts = {}
    for f in packed.files:
        parts[f.kind] = parts.get(f.kind, 0) + f.size
    members = {k: sum(p.size for p in items[0].files if p.kind == k) for k in ("image", "spz", "preview")}
    print(f"{name}: PLY {ply_size / 1e6:.2f} MB; one item's photo {members['image'] / 1e6:.2f} MB, "
          f"spz {members['spz'] / 1e6:.2f} MB, preview {members['preview'] / 1e3:.0f} kB")
    print(f"  a step of {n} items uploads {step / 1e6:.2f} MB: "
          + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in parts.items())
          + f", JSONL rows {len(encode_rows([p.row for p in packed.items])) / 1e3:.1f} kB")
    print(f"  per item {per_item / 1e6:.2f} MB = {per_item / ply_size:.3f} of the PLY (goal <= 0.25)")
    return per_item / ply_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 items per step")
    parser.add_argument("--items", type=int, default=4)
    args = parser.parse_args(argv)
    n = 2 if args.quick else args.items
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        fractions = {name: measure(name, scene(noisy=name == "noisy"), n, Path(tmp) / name)
                     for name in ("smooth", "noisy")}
    for name, frac in fractions.items():
        print(f"{'met    ' if frac <= 0.25 else 'NOT met'} {name}: bytes per item {frac:.3f} of the PLY (<= 0.25)")
    return 0 if all(f <= 0.25 for f in fractions.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
