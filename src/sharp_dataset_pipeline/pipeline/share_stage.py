"""The share stage: optional gsplat.org sharing of published items, after publish (GSPLAT_UPLOAD=1).

Post-processing only prepares the file to share (a small PLY, pure, no network). The publisher hands
each landed batch's items to :meth:`ShareStage.submit`, which never blocks: a full queue leaves the
item for ``sharp-dataset share --missing``. One thread uploads, and records each share as a late
field through the same recorder ``share --missing`` uses (local: the ledger at once, index files
rewritten once per batch of shares; hub: one commit per batch of shares). So a slow or hanging
gsplat.org holds neither the predictor nor a post-process slot nor the publisher.

At the end of a run the stage gets what is left of the drain deadline; a share still pending then is
left for ``share --missing`` (it never got share fields, so that command finds it).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import SharpDatasetError
from ..observe.events import EventSink
from ..publish.gsplat_client import GsplatClient, share_fields, try_share
from ..records import ProcessedItem

log = logging.getLogger(__name__)

POLL_S = 0.25


class ShareRecorder(Protocol):
    """Where late share fields go: ``record`` may batch, ``flush`` writes what is batched."""

    def record(self, item_id: str, fields: dict[str, str]) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class ShareSettings:
    """Sharing for one run (GSPLAT_UPLOAD=1): the client, the file post-processing prepares (the
    ``keep`` most visible Gaussians with ``use_small_ply``), and where the share fields are recorded."""

    client: GsplatClient
    use_small_ply: bool
    keep: int
    recorder: ShareRecorder
    queue_max: int = 256


@dataclass(frozen=True)
class ShareJob:
    item_id: str
    path: Path


@dataclass
class ShareReport:
    """What the share stage did in one run (``RunSummary.shares``). ``left`` were never shared
    (queue full, drain deadline passed, run aborted); ``failed`` were tried and failed. Both are
    published without share fields: ``sharp-dataset share --missing`` shares them."""

    shared: int = 0
    failed: int = 0
    left: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"shared": self.shared, "failed": self.failed, "left_for_share_missing": self.failed + self.left}


class ShareStage:
    """A thread fed by the publisher through its own bounded queue; see the module docstring."""

    def __init__(self, settings: ShareSettings, sink: EventSink, *, delete_after: bool = False,
                 aborting: Callable[[], bool] = lambda: False) -> None:
        self.settings, self.sink, self.delete_after, self.aborting = settings, sink, delete_after, aborting
        self.inbox: queue.Queue[ShareJob] = queue.Queue(maxsize=max(1, settings.queue_max))
        self.report = ShareReport()
        self.thread = threading.Thread(target=self._run, name="share", daemon=True)
        # Guards report, recorder and _closed. Only finish() ever waits on it, once, at the end of the
        # run (a Hub recorder commits under it once per 50 shares); publish and the predictor never do.
        self._lock = threading.Lock()
        self._ending = threading.Event()
        self._closed = False
        self._current: ShareJob | None = None  # the share being uploaded now

    def start(self) -> None:
        self.thread.start()

    def submit(self, items: list[ProcessedItem]) -> None:
        """Queue the published ``items`` that carry a file to share; never waits."""
        for item in items:
            if item.share_file is None:
                continue
            job = ShareJob(item.row.id, item.share_file)
            try:
                self.inbox.put_nowait(job)
            except queue.Full:
                log.warning("share queue full: %s is left for sharp-dataset share --missing", job.item_id)
                self._leave(job)

    def finish(self, timeout_s: float) -> ShareReport:
        """Share what is queued within ``timeout_s``, then leave the rest for ``share --missing``."""
        self._ending.set()
        deadline = time.monotonic() + timeout_s
        while self.thread.is_alive() and not self.aborting():  # a second Ctrl+C ends the wait
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.thread.join(timeout=min(POLL_S, left))
        with self._lock:
            self._closed = True
            in_flight = self._current is not None
            if in_flight:
                self.report.left += 1  # its result, if it ever comes, is dropped
            self._flush()
        while True:
            try:
                self._leave(self.inbox.get_nowait())
            except queue.Empty:
                break
        if self.report.left:
            log.warning("%d shares were not made (drain deadline, abort or a full queue); sharp-dataset share "
                        "--missing makes them", self.report.left)
        return self.report

    def _run(self) -> None:
        while True:
            try:
                job = self.inbox.get(timeout=POLL_S)
            except queue.Empty:
                if self._ending.is_set():
                    break
                continue
            if self.aborting():
                self._leave(job)
                continue
            self._share(job)
        with self._lock:
            if not self._closed:
                self._flush()

    def _share(self, job: ShareJob) -> None:
        with self._lock:  # checked and marked at once, so finish() counts this job exactly once
            closed = self._closed
            if not closed:
                self._current = job
        if closed:
            self._leave(job)
            return
        started = time.monotonic()
        result = try_share(self.settings.client, job.path, title=job.item_id)
        self.sink.busy("share", time.monotonic() - started)
        with self._lock:
            self._current = None
            if self._closed:
                log.warning("share of %s finished after the drain deadline; left for share --missing", job.item_id)
            elif result is None:
                self.report.failed += 1
                self.sink.count("share", "failed")
            else:
                self._record(job.item_id, share_fields(result))
        self._drop_file(job)

    def _record(self, item_id: str, fields: dict[str, str]) -> None:
        try:
            self.settings.recorder.record(item_id, fields)
        except (SharpDatasetError, OSError) as exc:  # the share exists, only its fields are lost
            log.warning("could not record the share of %s (%s); share --missing shares it again", item_id, exc)
            self.report.failed += 1
            return
        self.report.shared += 1
        self.sink.count("share", "shared")

    def _flush(self) -> None:
        try:
            self.settings.recorder.flush()
        except (SharpDatasetError, OSError) as exc:
            log.warning("could not record late share fields (%s); share --missing shares those items again", exc)

    def _leave(self, job: ShareJob) -> None:
        with self._lock:
            self.report.left += 1
        self.sink.count("share", "left")
        self._drop_file(job)

    def _drop_file(self, job: ShareJob) -> None:
        if not self.delete_after:
            return
        try:
            job.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not delete %s after sharing: %s", job.path, exc)
