"""``sharp-dataset failures``: every item that failed and was never published, one line each, and
the per-run ``stats.json`` (counts by status and by reason, as img2dataset's ``*_stats.json``).

Each store lists its own (``StoreAdmin.failed_items``); formatting is pure.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..ledger.status import FailedItem

FIELDS = ("id", "source", "stage", "reason", "attempts", "last", "detail")


def select(items: list[FailedItem], reason: str | None = None) -> list[FailedItem]:
    """``items`` with the given failure ``reason`` (all when ``None``), by id."""
    return sorted((f for f in items if reason is None or f.reason == reason), key=lambda f: f.item_id)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def failure_json(f: FailedItem) -> dict[str, Any]:
    """One failure as a JSON object (stable keys; ``last`` as ISO 8601 UTC, or null)."""
    return {"id": f.item_id, "source": f.source, "unit": f.unit, "stage": f.stage, "reason": f.reason,
            "detail": f.detail, "transient": f.transient, "attempts": f.attempts,
            "last": None if f.last_at is None else _when(f.last_at), "client": f.client}


def format_failures(items: list[FailedItem], detail_width: int = 160) -> str:
    """One tab-separated line per failed item under a header line (``FIELDS``), so ``cut`` and
    spreadsheets read it; the detail is cut to ``detail_width`` characters (``--json`` has it all)."""
    lines = ["\t".join(FIELDS)]
    for f in items:
        detail = " ".join(f.detail.split())
        if len(detail) > detail_width:
            detail = detail[: detail_width - 1] + "…"
        lines.append("\t".join([f.item_id, f.source or "-", f.stage, f.reason, str(f.attempts), _when(f.last_at),
                                detail]))
    return "\n".join(lines)


def run_stats(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's ``stats.json``: counts by status (published, already published, skipped, failed)
    and by reason, from its final summary."""
    failed = {str(k): int(v) for k, v in sorted((summary.get("failed") or {}).items())}
    skipped = {str(k): int(v) for k, v in sorted((summary.get("skipped") or {}).items())}
    return {
        "run_dir": summary.get("run_dir", ""),
        "store": summary.get("store", ""),
        "status": {"published": int(summary.get("published") or 0),
                   "already_published": int(summary.get("already_published") or 0),
                   "skipped": sum(skipped.values()), "failed": sum(failed.values())},
        "failed_by_reason": failed,
        "skipped_by_reason": skipped,
        "elapsed_s": summary.get("elapsed_s", 0.0),
        "stopped": summary.get("stopped", ""),
    }


def write_run_stats(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``<run_dir>/stats.json`` (see ``run_stats``); returns its path."""
    path = Path(run_dir) / "stats.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run_stats(summary), indent=2) + "\n", encoding="utf-8")
    return path
