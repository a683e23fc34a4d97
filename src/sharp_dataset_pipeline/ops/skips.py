"""``sharp-dataset failures --skips``: the inputs a store's runs skipped because they repeat another
one (``duplicate_content``, ``duplicate_id``, ``duplicate_row``, ``duplicate_url``), read from each run's
``items.jsonl`` (see ``observe.items``). Only the runs that published to the store are read (a
folder of runs may serve several stores); a repeat found by several runs is listed once, latest run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gallery.runs import read_runs

log = logging.getLogger(__name__)

SKIP_FIELDS = ("id", "source", "reason", "duplicate_of", "run", "detail")


@dataclass(frozen=True)
class RepeatSkip:
    """One input skipped as a repeat of another, by the run ``run``."""

    item_id: str
    source: str
    reason: str
    duplicate_of: str
    run: str
    detail: str


def repeat_skips(runs_dir: Path, store: str) -> list[RepeatSkip]:
    """The repeats the runs under ``runs_dir`` that published to ``store`` (a ``store_identity``) skipped."""
    found: dict[tuple[str, str, str], RepeatSkip] = {}
    for run in read_runs(runs_dir, store=store):  # by run folder name: timestamps, so oldest first
        path = runs_dir / run.run_id / "items.jsonl"
        if not path.is_file():
            continue
        for record in _records(path):
            if not record.get("duplicate_of"):
                continue
            skip = RepeatSkip(str(record.get("id", "")), str(record.get("source", "")), str(record.get("reason", "")),
                              str(record["duplicate_of"]), run.run_id, str(record.get("detail", "")))
            found[(skip.source, skip.reason, skip.duplicate_of)] = skip
    return sorted(found.values(), key=lambda s: (s.item_id, s.source))


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a run killed mid-line: the rest of the file still counts
            log.warning("%s line %d is not JSON; left out", path, number)
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def skip_json(s: RepeatSkip) -> dict[str, str]:
    """One repeat as a JSON object (stable keys)."""
    return {"id": s.item_id, "source": s.source, "reason": s.reason, "duplicate_of": s.duplicate_of,
            "run": s.run, "detail": s.detail}


def format_skips(skips: list[RepeatSkip]) -> str:
    """One tab-separated line per repeat under a header line (``SKIP_FIELDS``)."""
    lines = ["\t".join(SKIP_FIELDS)]
    for s in skips:
        lines.append("\t".join([s.item_id, s.source or "-", s.reason, s.duplicate_of, s.run,
                                " ".join(s.detail.split())]))
    return "\n".join(lines)
