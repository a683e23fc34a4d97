"""SHARP on a GPU: ``sharp-dataset run --predictor sharp`` against ml-sharp's own ``sharp predict``.

One folder of photos (``--photos DIR``, else generated at SHARP's 1536 px input, or ``--size``),
then, each as a subprocess with NVML sampled in a thread (``gpu_sampler.py``):

* upstream: ``sharp predict -i <folder> -o <out>`` if ``sharp`` is on PATH (batch 1, fp32: it has
  no other mode), else reported as not available;
* ours: ``sharp-dataset run --predictor sharp`` end to end into a fresh local store, once per
  batch size and precision; its ``--summary-json`` gives the per-stage busy seconds and the
  predictor's busy fraction.

Images/s is photos out / process wall time, start-up and model build included, for both, so the
ratio ours/upstream compares like with like. ``--random-weights`` times the same network with its
untrained weights (no checkpoint needed): upstream gets them as a checkpoint file written once,
ours through ``timing_run.py``, the only path that admits them (``sharp-dataset run`` refuses
``SHARP_RANDOM_WEIGHTS`` with exit code 2). Every output of such a run says RANDOM WEIGHTS.

    python benchmarks/bench_gpu.py --images 64 --batch-sizes 1,2,4,8 --precision fp32,bf16 \\
        --device cuda --random-weights --json gpu.json

The goal (issue 16): ours >= 3x upstream's images/s, with the GPU busy >= 90 % of the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gpu_sampler import GpuReading, open_nvml, timed

HERE = Path(__file__).resolve().parent
SCHEMA = "sharp-dataset/bench_gpu/1"
STAGES = ("fetch", "predict", "postprocess", "publish")
GOAL_RATIO, GOAL_BUSY = 3.0, 0.90
RANDOM_LABEL = "RANDOM WEIGHTS (untrained network): timing only, outputs are not SHARP's"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64, help="photos in the folder (default 64)")
    p.add_argument("--batch-sizes", default="1,2,4,8", help="SHARP_BATCH_SIZE values, comma-separated")
    p.add_argument("--precision", default="fp32,bf16", help="SHARP_PRECISION values, comma-separated")
    p.add_argument("--device", default="default", help="torch device for both tools (default: cuda if any)")
    p.add_argument("--json", type=Path, default=None, help="write every result to this file")
    p.add_argument("--random-weights", action="store_true", help="untrained weights, for timing only")
    p.add_argument("--checkpoint", type=Path, default=None, help="SHARP checkpoint (.pt) for both tools")
    p.add_argument("--photos", type=Path, default=None, help="use the first --images photos of this folder")
    p.add_argument("--size", type=int, default=1536, help="side of generated photos (default 1536)")
    p.add_argument("--formats", default="ply", help="PUBLISH_FORMATS for ours (default ply, what upstream writes)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per run")
    p.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    args.batch_list = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    args.precision_list = [x.strip() for x in args.precision.split(",") if x.strip()]
    if args.images < 1 or not args.batch_list or min(args.batch_list) < 1 or not args.precision_list:
        p.error("--images, --batch-sizes and --precision need positive values")
    if args.random_weights and args.checkpoint:
        p.error("--random-weights and --checkpoint exclude each other")
    if args.checkpoint and not args.checkpoint.is_file():
        p.error(f"--checkpoint {args.checkpoint} is not a file")
    return args


# -- inputs ----------------------------------------------------------------------------------------

def make_photos(folder: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` distinct square JPEGs: smooth colour fields plus grain, so each one decodes differently."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        base = Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize(
            (size, size), Image.Resampling.BICUBIC)
        grain = rng.integers(-12, 13, (size, size, 3))
        rgb = np.clip(np.asarray(base, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
        path = folder / f"bench_{i:05d}.jpg"
        Image.fromarray(rgb).save(path, quality=90)
        paths.append(path)
    return paths


def copy_photos(src: Path, folder: Path, n: int) -> list[Path]:
    """The first ``n`` photos of ``src`` (sorted, recursive) as one flat folder both tools read."""
    found = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if len(found) < n:
        raise SystemExit(f"--photos {src} holds {len(found)} photos, --images asks for {n}")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(found[:n]):
        dest = folder / f"p{i:05d}_{path.name}"  # unique stems: upstream writes <stem>.ply flat
        shutil.copy2(path, dest)
        out.append(dest)
    return out


def random_checkpoint(path: Path) -> str:
    """Write the untrained network's state dict for upstream's ``-c``; '' on success, else why not."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("sharp") is None:
        return "--random-weights needs torch and ml-sharp importable here to write the weights for upstream"
    import torch
    from sharp import models

    torch.save(models.create_predictor(models.PredictorParams()).state_dict(), path)
    return ""


# -- the runs --------------------------------------------------------------------------------------

def run_process(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float, log: Path
                ) -> tuple[int, float, GpuReading, str]:
    """(exit code, wall s, GPU reading, last lines of output); output goes to ``log``."""
    def go() -> int:
        with open(log, "w", encoding="utf-8") as out:
            try:
                return subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=timeout, check=False).returncode
            except subprocess.TimeoutExpired:
                return 124

    code, wall, gpu = timed(go)
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
    return code, wall, gpu, tail


def run_upstream(args: argparse.Namespace, photos: Path, work: Path, ckpt: Path | None, n: int) -> dict[str, Any]:
    exe = shutil.which("sharp")
    entry = upstream_entry(available=False)
    if exe is None:
        entry["reason"] = "sharp (ml-sharp's CLI) is not on PATH"
        return entry
    out = work / "upstream_out"
    cmd = [exe, "predict", "-i", str(photos), "-o", str(out), "--device", args.device]
    if ckpt is not None:
        cmd += ["-c", str(ckpt)]
    code, wall, gpu, tail = run_process(cmd, dict(os.environ), work, args.timeout, work / "upstream.log")
    made = len(list(out.glob("*.ply"))) if out.is_dir() else 0
    entry.update(available=True, command=cmd, returncode=code, wall_s=round(wall, 3), images_out=made,
                 images_per_s=round(made / wall, 4) if wall > 0 else None, gpu=gpu.as_json())
    if code != 0 or made != n:
        entry["reason"] = f"exit {code}, {made}/{n} PLYs; last output:\n{tail}"
    shutil.rmtree(out, ignore_errors=True)
    return entry


def upstream_entry(available: bool) -> dict[str, Any]:
    return {"available": available, "reason": "", "command": None, "returncode": None, "wall_s": None,
            "images_out": None, "images_per_s": None, "gpu": GpuReading(False, "not run").as_json()}


def ours_env(args: argparse.Namespace, batch: int, precision: str, run_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHARP_CHECKPOINT_PATH", "SHARP_RANDOM_WEIGHTS", "STORE", "SOURCE", "HF_REPO_ID")}
    env.update({"SHARP_BATCH_SIZE": str(batch), "SHARP_PRECISION": precision, "SHARP_DEVICE": args.device,
                "PUBLISH_FORMATS": args.formats, "PROGRESS": "plain", "HEARTBEAT_SECS": "30",
                "SAVE_DIR": str(run_dir), "KEEP_RUN_FILES": "0", "PYTHONUNBUFFERED": "1"})
    if args.random_weights:
        env["SHARP_RANDOM_WEIGHTS"] = "1"
    elif args.checkpoint:
        env["SHARP_CHECKPOINT_PATH"] = str(args.checkpoint.resolve())
    return env


def run_ours(args: argparse.Namespace, photos: Path, work: Path, batch: int, precision: str, n: int
             ) -> dict[str, Any]:
    tag = f"b{batch}_{precision}"
    store, summary_path = work / f"store_{tag}", work / f"summary_{tag}.json"
    flags = ["--source", f"folder:{photos}", "--store", f"local:{store}", "--summary-json", str(summary_path)]
    if args.random_weights:
        cmd = [sys.executable, str(HERE / "timing_run.py"), *flags]
    else:
        cmd = [sys.executable, "-m", "sharp_dataset_pipeline.cli", "run", "--predictor", "sharp", *flags]
    env = ours_env(args, batch, precision, work / f"run_{tag}")
    code, wall, gpu, tail = run_process(cmd, env, work, args.timeout, work / f"ours_{tag}.log")
    summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(work / f"run_{tag}", ignore_errors=True)
    return ours_entry(batch, precision, cmd, code, wall, gpu, summary, n, tail)


def ours_entry(batch: int, precision: str, cmd: list[str], code: int, wall: float, gpu: GpuReading,
               summary: dict[str, Any], n: int, tail: str) -> dict[str, Any]:
    published = int(summary.get("published", 0))
    busy = summary.get("busy_s", {})
    entry = {
        "batch_size": batch, "precision": precision, "command": cmd, "returncode": code,
        "wall_s": round(wall, 3), "published": published, "failed": summary.get("failed", {}),
        "images_per_s": round(published / wall, 4) if wall > 0 else None,
        "run_images_per_s": summary.get("items_per_s"), "run_elapsed_s": summary.get("elapsed_s"),
        "predictor_busy_fraction": summary.get("predictor_busy_fraction"),
        "stage_busy_s": {s: busy.get(s) for s in STAGES},
        "stage_s_per_image": {s: (round(busy[s] / published, 4) if busy.get(s) is not None and published else None)
                              for s in STAGES},
        "gpu": gpu.as_json(), "ratio_vs_upstream": None, "error": "",
    }
    if code != 0 or published != n:
        entry["error"] = f"exit {code}, {published}/{n} published; last output:\n{tail}"
    return entry


# -- report ----------------------------------------------------------------------------------------

def host_info() -> dict[str, Any]:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    spec = importlib.util.find_spec("sharp")
    nvml = open_nvml()
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "torch": version("torch"), "sharp_package": spec.origin if spec else None,
            "sharp_cli": shutil.which("sharp"), "gpu_name": None if isinstance(nvml, str) else nvml[2]}


def finish(report: dict[str, Any]) -> dict[str, Any]:
    """Ratios, the best of our runs, the goal check and the one-line summary."""
    up = report["upstream"]
    up_rate = up["images_per_s"] if up["available"] and not up["reason"] else None
    ok = [e for e in report["ours"] if not e["error"]]
    for e in report["ours"]:
        if up_rate and e["images_per_s"] is not None and not e["error"]:
            e["ratio_vs_upstream"] = round(e["images_per_s"] / up_rate, 3)
    best = max(ok, key=lambda e: e["images_per_s"] or 0.0) if ok else None
    busy = best["gpu"]["busy_fraction_active"] if best else None
    ratio = best["ratio_vs_upstream"] if best else None
    met = None if ratio is None or busy is None else bool(ratio >= GOAL_RATIO and busy >= GOAL_BUSY)
    report["best"] = None if best is None else {k: best[k] for k in (
        "batch_size", "precision", "images_per_s", "ratio_vs_upstream")} | {"gpu_busy_fraction_active": busy}
    report["goal"] = {"ratio_vs_upstream": GOAL_RATIO, "gpu_busy_fraction": GOAL_BUSY, "met": met}
    report["summary"] = summary_line(report, best, up_rate)
    return report


def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def summary_line(report: dict[str, Any], best: dict[str, Any] | None, up_rate: float | None) -> str:
    label = "[RANDOM WEIGHTS] " if report["random_weights"] else ""
    up = f"upstream {_fmt(up_rate)} img/s" if up_rate else f"upstream n/a ({report['upstream']['reason'][:60]})"
    if best is None:
        return f"{label}no run of ours succeeded; {up}"
    goal = {None: "goal not checked", True: "goal met", False: "goal not met"}[report["goal"]["met"]]
    return (f"{label}ours best {_fmt(best['images_per_s'])} img/s (batch {best['batch_size']}, "
            f"{best['precision']}) vs {up}: {_fmt(best['ratio_vs_upstream'], '{:.2f}x')} (goal >= {GOAL_RATIO:g}x); "
            f"GPU busy {_fmt(best['gpu']['busy_fraction_active'], '{:.1%}')} (goal >= {GOAL_BUSY:.0%}); {goal}")


def print_table(report: dict[str, Any]) -> None:
    if report["random_weights"]:
        print(f"*** {RANDOM_LABEL} ***")
    print(f"{report['images']} photos, {report['photo_size']}; device {report['device']}; "
          f"GPU {report['host']['gpu_name'] or 'n/a'}; formats {report['formats']}")
    head = ("run", "batch", "prec", "img/s", "run img/s", "x upstream", "GPU busy all/active", "peak MiB",
            "predict s/img", "post s/img", "publish s/img", "predictor busy")
    rows = []
    up = report["upstream"]
    if up["available"]:
        g = up["gpu"]
        rows.append(("upstream", "1", "fp32", _fmt(up["images_per_s"]), "", "1.00x",
                     f"{_fmt(g['busy_fraction'], '{:.0%}')}/{_fmt(g['busy_fraction_active'], '{:.0%}')}",
                     _fmt(g["peak_mem_mib"], "{}"), "", "", "", ""))
    for e in report["ours"]:
        g, per = e["gpu"], e["stage_s_per_image"]
        rows.append(("ours" + (" FAILED" if e["error"] else ""), str(e["batch_size"]), e["precision"],
                     _fmt(e["images_per_s"]), _fmt(e["run_images_per_s"]), _fmt(e["ratio_vs_upstream"], "{:.2f}x"),
                     f"{_fmt(g['busy_fraction'], '{:.0%}')}/{_fmt(g['busy_fraction_active'], '{:.0%}')}",
                     _fmt(g["peak_mem_mib"], "{}"), _fmt(per["predict"]), _fmt(per["postprocess"]),
                     _fmt(per["publish"]), _fmt(e["predictor_busy_fraction"], "{:.1%}")))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    if not up["available"] or up["reason"]:
        print(f"upstream: not available: {up['reason']}")
    for e in report["ours"]:
        if e["error"]:
            print(f"ours batch {e['batch_size']} {e['precision']}: {e['error']}")


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    photos = work / "photos"
    if args.photos:
        copy_photos(args.photos, photos, args.images)
    else:
        make_photos(photos, args.images, args.size)
    ckpt = args.checkpoint.resolve() if args.checkpoint else None
    report: dict[str, Any] = {
        "schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "random_weights": bool(args.random_weights), "label": RANDOM_LABEL if args.random_weights else "",
        "weights": "random" if args.random_weights else ("checkpoint" if ckpt else "default (torch hub cache)"),
        "images": args.images, "photos": str(args.photos) if args.photos else "generated",
        "photo_size": "as given" if args.photos else f"{args.size}x{args.size}", "device": args.device,
        "formats": args.formats, "batch_sizes": args.batch_list, "precisions": args.precision_list,
        "host": host_info(),
    }
    why = ""
    if args.random_weights and shutil.which("sharp"):
        ckpt = work / "random_weights.pt"
        why = random_checkpoint(ckpt)
    if why:
        report["upstream"] = upstream_entry(available=False) | {"reason": why}
    else:
        report["upstream"] = run_upstream(args, photos, work, ckpt, args.images)
    report["ours"] = [run_ours(args, photos, work, b, p, args.images)
                      for p in args.precision_list for b in args.batch_list]
    if args.random_weights and ckpt is not None:
        ckpt.unlink(missing_ok=True)
    return finish(report)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        report = benchmark(args, args.work_dir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
            report = benchmark(args, Path(tmp))
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"results: {args.json}")
    print(report["summary"])
    return 0 if report["best"] is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
