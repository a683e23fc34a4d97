"""Where progress goes: a rich live table on a terminal, heartbeat lines elsewhere, a metrics JSONL."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .events import Metrics

log = logging.getLogger(__name__)

STAGES = ("fetch", "predict", "postprocess", "publish")


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.2f}/s" if seconds > 0 else "-"


def _stage_count(counts: dict[str, dict[str, int]], stage: str) -> int:
    key = {"fetch": "ok", "predict": "images", "postprocess": "ok", "publish": "published"}[stage]
    return counts.get(stage, {}).get(key, 0)


def eta_seconds(snap: dict[str, Any], total_hint: int = 0) -> float | None:
    """Seconds until the admitted (or hinted) items are all through, at the publish rate so far."""
    counts, elapsed = snap["counts"], snap["elapsed_s"]
    published = _stage_count(counts, "publish")
    failed = sum(counts.get("failed", {}).values())
    todo = (total_hint or counts.get("source", {}).get("admitted", 0)) - published - failed
    if not published or todo <= 0 or elapsed <= 0:
        return None
    return todo / (published / elapsed)


def heartbeat_line(snap: dict[str, Any], total_hint: int = 0) -> str:
    """One plain line: counts per stage, failures, publish rate and an ETA when the total is known."""
    counts = snap["counts"]
    elapsed = snap["elapsed_s"]
    parts = [f"{s}={_stage_count(counts, s)}" for s in STAGES]
    failed = sum(counts.get("failed", {}).values())
    published = _stage_count(counts, "publish")
    line = f"[progress] {' '.join(parts)} failed={failed} rate={_rate(published, elapsed)} elapsed={elapsed:.0f}s"
    eta = eta_seconds(snap, total_hint)
    if eta is not None:
        line += f" eta={eta:.0f}s"
    return line


def _table(snap: dict[str, Any]) -> Table:
    counts, elapsed, busy = snap["counts"], snap["elapsed_s"], snap["busy_s"]
    table = Table(title=f"sharp-dataset  {elapsed:.0f}s", expand=False)
    for col in ("stage", "done", "rate", "busy"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    admitted = counts.get("source", {}).get("admitted", 0)
    table.add_row("source", str(admitted), _rate(admitted, elapsed), "")
    for stage in STAGES:
        n = _stage_count(counts, stage)
        table.add_row(stage, str(n), _rate(n, elapsed), f"{busy.get(stage, 0.0):.1f}s")
    failed = counts.get("failed", {})
    if failed:
        table.add_row("failed", str(sum(failed.values())), ", ".join(f"{k}:{v}" for k, v in failed.items()), "")
    eta = eta_seconds(snap)
    table.caption = f"ETA for admitted items: {eta:.0f}s" if eta is not None else "ETA: -"
    return table


class ProgressReporter:
    """Runs in its own thread; ``mode`` is rich, plain or none; always appends to ``jsonl_path``."""

    def __init__(
        self, metrics: Metrics, mode: str, interval_s: float, jsonl_path: Path | None, console: Console | None = None
    ) -> None:
        if mode == "auto":
            mode = "rich" if sys.stderr.isatty() else "plain"
        self.metrics, self.mode, self.interval_s, self.jsonl_path = metrics, mode, interval_s, jsonl_path
        self.console = console or Console(stderr=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, summary: dict[str, Any] | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._write_jsonl({"type": "summary", **(summary or {})})

    def _write_jsonl(self, record: dict[str, Any]) -> None:
        if self.jsonl_path is None:
            return
        try:
            self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"t": time.time(), **record}, default=str) + "\n")
        except OSError as exc:
            log.warning("could not write metrics: %s", exc)

    def _run(self) -> None:
        if self.mode == "rich":
            with Live(_table(self.metrics.snapshot()), console=self.console, refresh_per_second=2) as live:
                last = 0.0
                while not self._stop.wait(0.5):
                    snap = self.metrics.snapshot()
                    live.update(_table(snap))
                    if time.monotonic() - last >= self.interval_s:
                        self._write_jsonl({"type": "progress", **snap})
                        last = time.monotonic()
                live.update(_table(self.metrics.snapshot()))
            return
        while not self._stop.wait(self.interval_s):
            snap = self.metrics.snapshot()
            self._write_jsonl({"type": "progress", **snap})
            if self.mode == "plain":
                self.console.print(heartbeat_line(snap), highlight=False, soft_wrap=True)
