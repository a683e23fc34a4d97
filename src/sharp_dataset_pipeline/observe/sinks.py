"""Where progress goes: a rich live table on a terminal, heartbeat lines elsewhere, a metrics JSONL."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

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


def items_done(counts: dict[str, dict[str, int]]) -> int:
    """Items this run is finished with: published, found already published, or failed."""
    publish = counts.get("publish", {})
    return publish.get("published", 0) + publish.get("already_published", 0) + sum(counts.get("failed", {}).values())


def heartbeat_line(snap: dict[str, Any], total_hint: int = 0) -> str:
    """One plain line: counts per stage, failures, publish rate and an ETA when the total is known."""
    counts = snap["counts"]
    elapsed = snap["elapsed_s"]
    parts = [f"{s}={_stage_count(counts, s)}" for s in STAGES]
    failed = sum(counts.get("failed", {}).values())
    published = _stage_count(counts, "publish")
    line = f"[progress] {' '.join(parts)} failed={failed} rate={_rate(published, elapsed)} elapsed={elapsed:.0f}s"
    if total_hint:
        line += f" done={items_done(counts)}/{total_hint}"
    eta = eta_seconds(snap, total_hint)
    if eta is not None:
        line += f" eta={eta:.0f}s"
    return line


def _table(snap: dict[str, Any], total_hint: int = 0, status: str = "") -> RenderableType:
    """The live display: a table per stage, then (when known) ``x of N`` with a bar, the failure
    reasons on their own line, and what a requested stop is waiting for."""
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
        table.add_row("failed", str(sum(failed.values())), _rate(sum(failed.values()), elapsed), "")
    eta = eta_seconds(snap, total_hint)
    what = "ETA" if total_hint else "ETA for admitted items"
    table.caption = f"{what}: {eta:.0f}s" if eta is not None else "ETA: -"
    parts: list[RenderableType] = [table]
    if total_hint:
        done = min(items_done(counts), total_hint)
        bar = Table.grid(padding=(0, 1))
        bar.add_row(Text(f"{done} of {total_hint}"), ProgressBar(total=total_hint, completed=done, width=30))
        parts.append(bar)
    if failed:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(failed.items()))
        parts.append(Text(f"failed: {reasons}", no_wrap=True, overflow="ellipsis"))
    if status:
        # Abandoned items (dropped from the queues by the stop, given back) are no longer in flight.
        in_flight = max(0, admitted - items_done(counts) - counts.get("source", {}).get("items_abandoned", 0))
        parts.append(Text(f"{status} ({in_flight} in flight)", style="bold yellow"))
    return Group(*parts)


class ProgressReporter:
    """Runs in its own thread; ``mode`` is rich, plain or none; always appends to ``jsonl_path``.

    ``total`` gives the number of items when the source knows it (None until then); ``status``
    says what the run is doing besides working (a stop that drains, a pause), or "" when nothing.
    Both are polled at every refresh. Log lines go through the same ``console`` (see
    ``observe.logs.setup_logging``), so the live display prints them above itself.
    """

    def __init__(
        self, metrics: Metrics, mode: str, interval_s: float, jsonl_path: Path | None, console: Console | None = None,
        total: Callable[[], int | None] | None = None, status: Callable[[], str] | None = None,
    ) -> None:
        if mode == "auto":
            mode = "rich" if sys.stderr.isatty() else "plain"
        self.metrics, self.mode, self.interval_s, self.jsonl_path = metrics, mode, interval_s, jsonl_path
        self.console = console or Console(stderr=True)
        self._total = total or (lambda: None)
        self._status = status or (lambda: "")
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

    def _render(self, snap: dict[str, Any]) -> RenderableType:
        return _table(snap, self._total() or 0, self._status())

    def _run(self) -> None:
        if self.mode == "rich":
            with Live(self._render(self.metrics.snapshot()), console=self.console, refresh_per_second=4,
                      auto_refresh=False) as live:
                last = 0.0
                while not self._stop.wait(0.25):
                    snap = self.metrics.snapshot()
                    live.update(self._render(snap), refresh=True)
                    if time.monotonic() - last >= self.interval_s:
                        self._write_jsonl({"type": "progress", **snap})
                        last = time.monotonic()
                live.update(self._render(self.metrics.snapshot()), refresh=True)
            return
        while not self._stop.wait(self.interval_s):
            snap = self.metrics.snapshot()
            self._write_jsonl({"type": "progress", **snap})
            if self.mode == "plain":
                # Text, not a markup string: "[progress]" would be read as a style tag and vanish.
                self.console.print(Text(heartbeat_line(snap, self._total() or 0)), highlight=False, soft_wrap=True)
