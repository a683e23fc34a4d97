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

Printed: where each item's bytes go (tar members, tar headers and padding, the index) and its
``.spz`` by attribute stream; ``--options`` adds the ``.spz`` under other encoder settings.

    python benchmarks/bench_bytes.py [--quick] [--items 4] [--options]
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench_formats import HEIGHT, WIDTH, scene
from harness import machine_line
from sharp_dataset_pipeline.pipeline.stages import camera_metadata
from sharp_dataset_pipeline.publish.index import encode_rows
from sharp_dataset_pipeline.publish.layout import item_path
from sharp_dataset_pipeline.publish.parquet_index import row_members
from sharp_dataset_pipeline.publish.shard_pack import pack_batch
from sharp_dataset_pipeline.records import IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.splat.formats import FormatOptions, extra_files_json, make_extra_files
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import write_ply
from sharp_dataset_pipeline.splat.spz import arrays_from_gaussians, encode_spz

SHARDS_FORMATS = FormatOptions(formats=("spz", "preview"))  # the sharded layout's default
SPZ_STREAMS = ("positions", "alphas", "colours", "scales", "rotations")  # SHARP has no higher SH bands


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


def spz_streams(path: Path) -> dict[str, int]:
    """Compressed bytes of each attribute stream of a version 4 ``.spz`` (its table of contents)."""
    data = path.read_bytes()
    count, toc = struct.unpack_from("<BI", data, 15)  # the header's stream count and table offset
    sizes = [struct.unpack_from("<QQ", data, toc + 16 * i)[0] for i in range(count)]
    return {"header": toc + 16 * count, **dict(zip(SPZ_STREAMS, sizes, strict=False))}


def breakdown(packed_items: list[ProcessedItem], parts: dict[str, int], n: int) -> dict[str, float]:
    """Bytes per item by where they go: each tar member kind, the tars' headers and padding, the index."""
    fields: dict[str, int] = {}
    for p in packed_items:
        for m in row_members(p.row):
            fields[m.field] = fields.get(m.field, 0) + m.size
    out = {f"member .{k}": v / n for k, v in sorted(fields.items())}
    out["tar headers + padding"] = (parts.get("shard", 0) - sum(fields.values())) / n
    out["Parquet index shard"] = parts.get("index_shard", 0) / n
    out["JSONL row"] = len(encode_rows([p.row for p in packed_items])) / n
    return out


def spz_options(g: Gaussians) -> None:
    """The item's ``.spz`` under other encoder settings SPZ allows (not the defaults): zstd levels, and
    fewer position fractional bits (coarser than the reference's 1/4096 grid: less fidelity)."""
    arrays = arrays_from_gaussians(g)
    sizes = {f"zstd {lvl}": len(encode_spz(arrays, zstd_level=lvl)) for lvl in (3, 6, 12, 19)}
    sizes |= {f"{bits} fractional bits": len(encode_spz(arrays, fractional_bits=bits)) for bits in (11, 10)}
    print("  .spz with other encoder settings: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))


def measure(name: str, g: Gaussians, n: int, work: Path, options: bool = False) -> float:
    items = [item(g, f"{name}{k:03d}", work / "items", seed=k) for k in range(n)]
    ply_size = (work / "items" / f"{name}000.ply").stat().st_size
    spz = next(p.local_path for p in items[0].files if p.kind == "spz")
    packed = pack_batch(items, "bench", work / "packed")
    step = sum(f.size for f in packed.files) + len(encode_rows([p.row for p in packed.items]))
    per_item = step / n
    parts: dict[str, int] = {}
    for f in packed.files:
        parts[f.kind] = parts.get(f.kind, 0) + f.size
    print(f"{name}: PLY {ply_size / 1e6:.2f} MB; a step of {n} items uploads {step / 1e6:.2f} MB: "
          + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in parts.items()))
    print("  per item: " + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in breakdown(packed.items, parts, n).items()))
    print("  its .spz by stream (zstd-compressed bytes): "
          + ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in spz_streams(spz).items()))
    print(f"  per item {per_item / 1e6:.2f} MB = {per_item / ply_size:.3f} of the PLY (goal <= 0.25)")
    if options:
        spz_options(g)
    return per_item / ply_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 items per step")
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--options", action="store_true", help="also the .spz under other encoder settings (~30 s)")
    args = parser.parse_args(argv)
    n = 2 if args.quick else args.items
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        fractions = {name: measure(name, scene(noisy=name == "noisy"), n, Path(tmp) / name, args.options)
                     for name in ("smooth", "noisy")}
    for name, frac in fractions.items():
        print(f"{'met    ' if frac <= 0.25 else 'NOT met'} {name}: bytes per item {frac:.3f} of the PLY (<= 0.25)")
    return 0 if all(f <= 0.25 for f in fractions.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
