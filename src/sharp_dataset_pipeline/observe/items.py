"""``<run folder>/items.jsonl``: one line per input the source yielded (or skipped as a repeat of
another), with its final status in this run — img2dataset's per-row status.

Fed by the pipeline's events (``EventSink.event``): ``item_seen`` when the source yields an input,
``item_done`` when the run is finished with it (published, skipped, failed). Inputs seen but never
done (a stop, a limit, a store that failed) get their line when the log closes, so every input
has exactly one line.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import IO, Any

from ..redact import redact, strip_url

log = logging.getLogger(__name__)

FIELDS = ("id", "source", "status", "reason", "stage", "detail", "duplicate_of")
STATUSES = ("published", "skipped", "failed")
# The reason of an input the run ended before finishing (a later run takes it up again).
RUN_ENDED = "run_ended"


class ItemStatusLog:
    """A thread-safe event consumer writing ``items.jsonl``; pass ``event`` as a Metrics listener."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}  # seen, not done yet: id → source
        self._done: set[str] = set()
        self._fh: IO[str] | None = None
        self._closed = False
        self.lines = 0

    def event(self, kind: str, **fields: Any) -> None:
        """Consume one pipeline event; kinds other than ``item_seen``/``item_done`` are ignored."""
        if kind == "item_seen":
            with self._lock:
                if fields["id"] not in self._done:
                    self._pending.setdefault(fields["id"], str(fields.get("source", "")))
        elif kind == "item_done":
            with self._lock:
                self._done_locked(fields)

    def _done_locked(self, fields: dict[str, Any]) -> None:
        item_id = str(fields["id"])
        if self._closed:
            return
        source = ""
        # An input that repeats another is never yielded, and it shares its id with the input it
        # repeats (same content): its line stands alone, outside the seen/done bookkeeping.
        if not fields.get("duplicate_of"):
            if item_id in self._done:
                return  # one final line per input: a late second report is dropped
            source = self._pending.pop(item_id, "")
            self._done.add(item_id)
        self._write({
            "id": item_id,
            "source": strip_url(str(fields.get("source") or source)),
            "status": fields["status"],
            "reason": str(fields.get("reason", "")),
            "stage": str(fields.get("stage", "")),
            "detail": redact(str(fields.get("detail", ""))),
            "duplicate_of": strip_url(str(fields.get("duplicate_of", ""))),
        })

    def _write(self, record: dict[str, Any]) -> None:
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("a", encoding="utf-8")
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.lines += 1
        except OSError as exc:  # a full disk must not take the run down; the ledger has the failures
            if not self._closed:
                log.warning("items.jsonl: could not write %s: %s", self.path, exc)
            self._closed = True

    def close(self) -> None:
        """Write the inputs the run ended before finishing, then close the file."""
        with self._lock:
            for item_id in list(self._pending):
                self._done_locked({"id": item_id, "status": "skipped", "reason": RUN_ENDED,
                                   "detail": "the run ended before this input was done; a later run takes it"})
            self._closed = True
            if self._fh is not None:
                try:
                    self._fh.close()
                except OSError as exc:
                    log.warning("items.jsonl: could not write %s: %s", self.path, exc)
                self._fh = None
