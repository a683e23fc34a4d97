"""Data for the run report: run folders (``metrics.jsonl``, ``gpu_mem_log.csv``) and publish events.

Parsing and shaping are pure (text or records in, series out); ``read_runs`` is the one
function that touches the disk. A malformed line is skipped with a warning: a report shows
what it can rather than failing on a run that was killed mid-write.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ...ledger.status import PublishEvent

log = logging.getLogger(__name__)

STAGES = ("fetch", "predict", "postprocess", "publish")
# Which counter says how many items a stage finished (the pipeline's metrics names).
STAGE_DONE = {"fetch": "ok", "predict": "images", "postprocess": "ok", "publish": "published"}


@dataclass(frozen=True)
class GpuSample:
    t: float
    gpu: str
    used_mib: float
    total_mib: float


@dataclass
class RunData:
    run_id: str
    progress: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    gpu: list[GpuSample] = field(default_factory=list)


def parse_metrics(text: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Progress records and the last summary record of one ``metrics.jsonl``."""
    progress: list[dict[str, Any]] = []
    summary = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            log.warning("metrics line %d is not JSON; skipped", number)
            continue
        if not isinstance(record, dict):
            continue
        if record.get("type") == "progress":
            progress.append(record)
        elif record.get("type") == "summary":
            summary = record
    return progress, summary


def _timestamp(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_gpu_log(text: str) -> list[GpuSample]:
    """Rows of ``gpu_mem_log.csv`` (``timestamp, gpu_index, gpu_name, mem_used_mib, mem_total_mib, ...``)."""
    samples = []
    for row in csv.DictReader(io.StringIO(text)):
        t = _timestamp(str(row.get("timestamp") or ""))
        try:
            used = float(row.get("mem_used_mib") or "nan")
            total = float(row.get("mem_total_mib") or "nan")
        except ValueError:
            continue
        if t is None or not math.isfinite(used):
            continue
        gpu = f"GPU{row.get('gpu_index', '?')}"
        samples.append(GpuSample(t, gpu, used, total))
    return samples


def store_identity(spec: str, base: Path | None = None) -> str:
    """A store named the same wherever a command runs: a local store's folder made absolute
    (relative to ``base``, default the current folder), a hub store's ``hf:user/repo`` as is."""
    kind, _, arg = spec.partition(":")
    if kind == "local" and arg:
        path = Path(arg).expanduser()
        return "local:" + str(((base or Path.cwd()) / path).resolve() if not path.is_absolute() else path.resolve())
    if kind == "hub":
        return "hf:" + arg
    return spec


def _run_store(folder: Path, summary: dict[str, Any] | None) -> str | None:
    """Which store a run published to, from its summary: the absolute ``store_id`` it recorded, or
    (runs from before that field) its store spec resolved against the folder the run ran in, found
    as the ancestor of ``folder`` from which the recorded ``run_dir`` leads to ``folder``."""
    if not summary:
        return None
    extra = summary.get("extra")
    if isinstance(extra, dict) and isinstance(extra.get("store_id"), str):
        return extra["store_id"]
    spec, run_dir = summary.get("store"), summary.get("run_dir")
    if not isinstance(spec, str) or not isinstance(run_dir, str) or not run_dir:
        return None
    if not spec.startswith("local:"):
        return store_identity(spec)
    if Path(spec[len("local:"):]).expanduser().is_absolute():
        return store_identity(spec)
    if Path(run_dir).is_absolute():
        return None
    here = folder.resolve()
    for base in here.parents:
        if (base / run_dir).resolve() == here:
            return store_identity(spec, base)
    return None


def read_runs(runs_dir: Path | None, store: str | None = None) -> list[RunData]:
    """Every run folder under ``runs_dir`` that has a metrics file or a GPU log, by name.

    With ``store`` (a ``store_identity``), only the runs whose summary says they published to
    that store: a folder of runs shared by several stores shows each store its own runs. A run
    that ended without a summary (killed) cannot say, and is left out with a log line.
    """
    if runs_dir is None or not Path(runs_dir).is_dir():
        return []
    runs = []
    for folder in sorted(p for p in Path(runs_dir).iterdir() if p.is_dir()):
        metrics, gpu_log = folder / "metrics.jsonl", folder / "gpu_mem_log.csv"
        if not metrics.is_file() and not gpu_log.is_file():
            continue
        run = RunData(folder.name)
        if metrics.is_file():
            run.progress, run.summary = parse_metrics(metrics.read_text(encoding="utf-8", errors="replace"))
        if store is not None and _run_store(folder, run.summary) != store:
            log.info("run report: %s left out (it did not publish to %s, or says nothing of its store)",
                     folder, store)
            continue
        if gpu_log.is_file():
            run.gpu = parse_gpu_log(gpu_log.read_text(encoding="utf-8", errors="replace"))
        runs.append(run)
    return runs


def bucket_width(span_s: float, max_points: int = 240) -> float:
    """Bucket width in seconds: one minute, or whole minutes so a series has at most ``max_points``."""
    return 60.0 * max(1, math.ceil(span_s / 60.0 / max_points))


def items_per_minute(events: list[PublishEvent], max_points: int = 240) -> dict[str, list[tuple[float, float]]]:
    """Per client, items published per minute in consecutive buckets (idle buckets are zero)."""
    if not events:
        return {}
    t0 = min(e.t for e in events)
    t1 = max(e.t for e in events)
    width = bucket_width(t1 - t0, max_points)
    # One idle bucket on each side, so that even a single burst draws as a line from zero.
    start = math.floor(t0 / width) * width - width
    n = int((t1 - start) // width) + 2
    out: dict[str, list[float]] = {}
    for e in events:
        out.setdefault(e.client, [0.0] * n)[int((e.t - start) // width)] += e.items
    per_minute = 60.0 / width
    return {client: [(start + (i + 0.5) * width, v * per_minute) for i, v in enumerate(values)]
            for client, values in sorted(out.items())}


def _last_counts(run: RunData) -> dict[str, dict[str, int]]:
    for record in reversed(run.progress):
        if isinstance(record.get("counts"), dict):
            return record["counts"]
    return {}


def stage_timings(runs: list[RunData]) -> dict[str, dict[str, float]]:
    """Per run, busy milliseconds per finished item of each stage (from the final account)."""
    out: dict[str, dict[str, float]] = {}
    for run in runs:
        final = run.summary or (run.progress[-1] if run.progress else None)
        if not final or not isinstance(final.get("busy_s"), dict):
            continue
        counts = _last_counts(run)
        published = int(final.get("published") or 0)
        timings = {}
        for stage in STAGES:
            busy = final["busy_s"].get(stage)
            done = counts.get(stage, {}).get(STAGE_DONE[stage], 0) or published
            if isinstance(busy, (int, float)) and done > 0:
                timings[stage] = 1000.0 * busy / done
        if timings:
            out[run.run_id] = timings
    return out


def throughput(runs: list[RunData]) -> dict[str, list[tuple[float, float]]]:
    """Per run, items published so far over time (progress records, then the final summary)."""
    out = {}
    for run in runs:
        pts = [(float(r["t"]), float(r["counts"].get("publish", {}).get("published", 0)))
               for r in run.progress if isinstance(r.get("t"), (int, float)) and isinstance(r.get("counts"), dict)]
        s = run.summary
        if s and isinstance(s.get("t"), (int, float)) and isinstance(s.get("published"), (int, float)):
            pts.append((float(s["t"]), float(s["published"])))
        if pts:
            out[run.run_id] = pts
    return out


def gpu_series(runs: list[RunData]) -> tuple[dict[str, list[tuple[float, float]]], set[str]]:
    """GPU memory used per run and GPU, plus each GPU's total as a dashed line."""
    series: dict[str, list[tuple[float, float]]] = {}
    dashed: set[str] = set()
    for run in runs:
        for s in run.gpu:
            series.setdefault(f"{run.run_id} {s.gpu} used", []).append((s.t, s.used_mib))
            if math.isfinite(s.total_mib):
                label = f"{run.run_id} {s.gpu} total"
                series.setdefault(label, []).append((s.t, s.total_mib))
                dashed.add(label)
    return series, dashed
