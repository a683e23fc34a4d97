"""SPZ in process vs splat-transform, and the CPU cost of post-processing one SHARP-size item on one core.

Part 1, side by side in one run on the same 1,179,648-Gaussian SHARP-like scenes (``bench_formats.scene``:
"smooth" compresses well, "noisy" badly; real SHARP output lies between): our encoder from the Gaussians in
memory (what the pipeline does) and from the ``.ply`` on disk (what ``sharp-dataset convert`` does: read,
encode, write), against ``splat-transform item.ply item.spz`` (Node start-up included, as the pipeline used to
pay it per item). Prints the ratio of medians and both sizes. Goals: >= 5x faster, <= 1.1x the size.

Part 2: the CPU part of post-processing one SHARP-size item once the unprojection ran on the prediction device:
the ``.spz``, the 512-px preview, the item's JSON row, and a tar of those members, pinned to one core
(``os.sched_setaffinity``), wall and process CPU seconds. Goal: < 1 s (what a GPU needs to predict one image).

Run from the repository root after ``npm ci``: ``python benchmarks/bench_spz.py [--quick]``.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_formats import scene
from harness import machine_line, parse_args, repeats
from sharp_dataset_pipeline.splat.convert import convert, locate_splat_transform, tool_version
from sharp_dataset_pipeline.splat.formats import FormatOptions, extra_files_json, make_extra_files
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import write_ply
from sharp_dataset_pipeline.splat.ply_any import read_splat_ply
from sharp_dataset_pipeline.splat.spz import encode_gaussians, encode_spz


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system  # children: the splat-transform process


def measure(name: str, fn: Callable[[], object], n: int, warmup: int = 1) -> tuple[float, float]:
    """Median wall and median CPU seconds (this process and its children) of ``n`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter(), _cpu()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(_cpu() - c0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(f"{name}: median wall {wall:.3f} s (min {min(walls):.3f}, max {max(walls):.3f}), CPU {cpu:.3f} s, n={n}",
          flush=True)
    return wall, cpu


def bench_encoder(name: str, g: Gaussians, work: Path, n: int) -> dict[str, float]:
    ply, ours_file, theirs = work / f"{name}.ply", work / f"{name}.ours.spz", work / f"{name}.st.spz"
    write_ply(g, ply)
    tool = locate_splat_transform()
    r: dict[str, float] = {}
    r["mem"], r["mem_cpu"] = measure(f"{name}: ours, Gaussians in memory -> .spz bytes", lambda: encode_gaussians(g), n)
    r["disk"], r["disk_cpu"] = measure(f"{name}: ours, .ply -> .spz file (read + encode + write)",
                                       lambda: ours_file.write_bytes(encode_spz(read_splat_ply(ply).arrays)), n)
    r["st"], r["st_cpu"] = measure(f"{name}: splat-transform .ply -> .spz", lambda: convert(tool, ply, theirs), n,
                                   warmup=0)
    r["ours_size"], r["st_size"] = len(encode_gaussians(g)), theirs.stat().st_size
    print(f"{name}: wall {r['st'] / r['mem']:.1f}x faster in memory, {r['st'] / r['disk']:.1f}x from the file; "
          f"CPU {r['st_cpu'] / r['mem_cpu']:.1f}x / {r['st_cpu'] / r['disk_cpu']:.1f}x (goal >= 5x); size "
          f"{r['ours_size'] / 1e6:.2f} MB vs {r['st_size'] / 1e6:.2f} MB = {r['ours_size'] / r['st_size']:.3f}x "
          f"(goal <= 1.1x)", flush=True)
    return r


def _item_json(made: list, item_id: str) -> bytes:
    row = {"id": item_id, "gaussians": made[0].count,
           "extra_files": extra_files_json([(f, f"{item_id}/{f.local_path.name}") for f in made])}
    return json.dumps(row, sort_keys=True).encode()


def postprocess_item(g: Gaussians, work: Path) -> int:
    """SPZ + preview (made and checked as published), the JSON row, the tar of the members; returns tar bytes."""
    opts = FormatOptions(formats=("spz", "preview"))
    made = make_extra_files(g, work / "unused.ply", "item", work, opts)
    members = [(f.local_path.name, f.local_path.read_bytes()) for f in made] + [("item.json", _item_json(made, "item"))]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return len(buf.getvalue())


def bench_postprocess(g: Gaussians, work: Path, n: int) -> tuple[float, float]:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    size = postprocess_item(g, work)
    wall, cpu = measure(f"post-process one item on one core (spz + preview + JSON + tar, {size / 1e6:.2f} MB)",
                        lambda: postprocess_item(g, work), n)
    print(f"post-process: CPU {cpu:.3f} s per item (goal < 1 s); wall {wall:.3f} s on a shared core", flush=True)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    n = repeats(args, full=5, quick=2)
    tool = locate_splat_transform()
    print(machine_line())
    print(f"splat-transform {tool_version(tool)} via {tool.describe()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("smooth", "noisy"):
            results[name] = bench_encoder(name, scene(noisy=name == "noisy"), Path(tmp), n)
        print()
        print("| scene | ours: in memory | ours: .ply to .spz | splat-transform | speed-up (wall) | speed-up (CPU) "
              "| ours | splat-transform | size ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, r in results.items():
            print(f"| {name} | {r['mem']:.3f} s ({r['mem_cpu']:.3f} CPU) | {r['disk']:.3f} s ({r['disk_cpu']:.3f} CPU) "
                  f"| {r['st']:.2f} s ({r['st_cpu']:.2f} CPU) | {r['st'] / r['mem']:.1f}x / {r['st'] / r['disk']:.1f}x "
                  f"| {r['st_cpu'] / r['mem_cpu']:.1f}x / {r['st_cpu'] / r['disk_cpu']:.1f}x "
                  f"| {r['ours_size'] / 1e6:.2f} MB | {r['st_size'] / 1e6:.2f} MB "
                  f"| {r['ours_size'] / r['st_size']:.3f} |")
        print()
        bench_postprocess(scene(noisy=True), Path(tmp), n)
    print(f"finished at {time.strftime('%H:%M:%S')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
