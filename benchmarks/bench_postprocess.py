"""Post-processing one SHARP image (1,179,648 Gaussians) on the CPU: unprojection + PLY write.

Candidate: ``splat.unproject.unproject`` (closed-form float32 eigen-decomposition, vectorised) and
``splat.ply.write_ply``. Baseline: the documented upstream method as the tests' reference
implements it (``tests/standins/sharp/utils/gaussians.py``): float64 SVD with the reflection fix,
SciPy quaternions, per-vertex tuples written through plyfile. Both run in the same process on
the same random NDC scene, alternating so both see the same background load; the ratio of
medians is printed (target: at least 8x).

Run: ``python benchmarks/bench_postprocess.py [--quick] [--repeat N]``.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import Timing, compare, machine_line, parse_args, repeats, time_call
from sharp_dataset_pipeline.splat.ply import write_ply
from sharp_dataset_pipeline.splat.unproject import unproject

N = 2 * 768 * 768
WIDTH, HEIGHT, FOCAL = 4032, 3024, 3000.0
_REF = Path(__file__).resolve().parents[1] / "tests" / "standins" / "sharp" / "utils" / "gaussians.py"


def load_reference():
    spec = importlib.util.spec_from_file_location("standin_sharp_gaussians", _REF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scene(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """NDC Gaussians shaped like SHARP's output: points in the frustum, small anisotropic splats."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.5, 30.0, n)
    means = np.stack([rng.uniform(-1, 1, n) * z, rng.uniform(-1, 1, n) * z, z], 1)
    return {
        "means": means.astype(np.float32),
        "scales": np.exp(rng.uniform(np.log(1e-4), np.log(0.3), (n, 3))).astype(np.float32),
        "quats": rng.standard_normal((n, 4)).astype(np.float32),
        "colors": rng.uniform(0, 1, (n, 3)).astype(np.float32),
        "opacities": rng.uniform(0.01, 0.99, n).astype(np.float32),
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    ref = load_reference()
    logging.getLogger("sharp.utils.gaussians").setLevel(logging.ERROR)  # its per-call reflection warning
    data = scene(N)
    print(machine_line())
    print(f"{N} Gaussians, image {WIDTH}x{HEIGHT}, f = {FOCAL} px")
    with tempfile.TemporaryDirectory() as tmp:
        ours_path, ref_path = Path(tmp) / "ours.ply", Path(tmp) / "ref.ply"

        def ours() -> None:
            g = unproject(**data, focal_px=FOCAL, width=WIDTH, height=HEIGHT)
            write_ply(g, ours_path)

        def upstream() -> None:
            m, s, q = ref.reference_unproject(data["means"], data["scales"], data["quats"], np.eye(4),
                                              ref.internal_intrinsics(FOCAL, WIDTH, HEIGHT), (1536, 1536))
            attrs = ref.reference_attributes(m, s, q, data["colors"], data["opacities"])
            ref.reference_save_ply(attrs, FOCAL, WIDTH, HEIGHT, ref_path)

        g = unproject(**data, focal_px=FOCAL, width=WIDTH, height=HEIGHT)
        time_call("unproject only", lambda: unproject(**data, focal_px=FOCAL, width=WIDTH, height=HEIGHT),
                  repeats(args, 5, 1))
        time_call("write_ply only", lambda: write_ply(g, ours_path), repeats(args, 5, 1))
        # Alternate the two so both see the same background load on a shared machine.
        ours()
        ours_s, upstream_s = [], []
        for _ in range(repeats(args, 3, 1)):
            ours_s.append(_timed(ours))
            upstream_s.append(_timed(upstream))
        candidate = Timing("ours: unproject + write_ply", tuple(ours_s))
        baseline = Timing("upstream method: SVD64 + SciPy + plyfile tuples", tuple(upstream_s))
        print(candidate.line())
        print(baseline.line())
        ratio = compare(candidate, baseline)
        sizes = (ours_path.stat().st_size, ref_path.stat().st_size)
        print(f"file sizes: ours {sizes[0]} B, upstream method {sizes[1]} B")
        print(f"target >= 8x: {'met' if ratio >= 8 else 'NOT met'} ({ratio:.1f}x)")


if __name__ == "__main__":
    main()
