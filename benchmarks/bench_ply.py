"""Writing one SHARP-size scene (1,179,648 Gaussians) as a PLY: write_ply vs the upstream way.

The upstream way (ml-sharp's save_ply) builds a Python list of per-vertex tuples, turns it into a
structured array, describes each element for plyfile and lets plyfile write. Both files must be
byte-identical; the candidate also computes the SHA-256 while writing, the baseline does not.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from harness import compare, machine_line, parse_args, repeats, time_call
from sharp_dataset_pipeline.splat.gaussians import VERTEX_PROPERTIES, Gaussians
from sharp_dataset_pipeline.splat.ply import write_ply

N = 2 * 768 * 768


def upstream_write(g: Gaussians, path: Path) -> None:
    """The per-vertex-tuple path, as ml-sharp's save_ply does it."""
    dtype = [(name, "f4") for name in VERTEX_PROPERTIES]
    rows = [tuple(row) for row in g.vertices]
    elements = [PlyElement.describe(np.array(rows, dtype=dtype), "vertex")]
    meta = (
        ("extrinsic", np.asarray(g.extrinsic, dtype="f4").reshape(-1).tolist(), "f4"),
        ("intrinsic", g.intrinsic.tolist(), "f4"),
        ("image_size", [g.width, g.height], "u4"),
        ("frame", [1, g.count], "i4"),
        ("disparity", list(g.disparity), "f4"),
        ("color_space", [g.color_space], "u1"),
        ("version", list(g.version), "u1"),
    )
    for name, values, dt in meta:
        elements.append(PlyElement.describe(np.array([(v,) for v in values], dtype=[(name, dt)]), name))
    PlyData(elements).write(str(path))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((N, 14)).astype(np.float32)
    v[:, 2] = rng.uniform(0.5, 20.0, N).astype(np.float32)
    g = Gaussians(vertices=v, focal_px=1200.0, width=1536, height=1024)
    print(machine_line())
    print(f"{N:,} Gaussians, {'quick' if args.quick else 'full'} run")
    with tempfile.TemporaryDirectory(prefix="bench_ply_") as tmp:
        ours, theirs = Path(tmp) / "ours.ply", Path(tmp) / "upstream.ply"
        cand = time_call("write_ply", lambda: write_ply(g, ours), repeats(args, full=10, quick=2))
        base = time_call("upstream tuples+plyfile", lambda: upstream_write(g, theirs), repeats(args, full=3))
        if ours.read_bytes() != theirs.read_bytes():
            print("FAIL: the two files differ", file=sys.stderr)
            return 1
        print(f"identical bytes: yes ({ours.stat().st_size:,} bytes)")
    ratio = compare(cand, base)
    print(f"target >= 10x: {'met' if ratio >= 10 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
