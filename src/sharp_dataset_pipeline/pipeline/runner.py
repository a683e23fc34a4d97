"""Wiring: source → fetch pool → predictor → post-process pool → publisher (→ share), on bounded queues.

The predictor thread never touches the network or the store: it only takes fetched images
from a queue and hands raw splats to the post-process pool (invariant 6). Stop drains in-flight
work through publish within a deadline, then releases the leases it will not finish (inv. 5).
"""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import CommitQuotaSpent, ConfigError, FatalDeviceError, PermanentError, RateLimited, TransientError
from ..fetch.fetcher import fetch_item
from ..observe.events import Metrics
from ..predict.base import Predictor, RawSplat
from ..records import Failure, FetchedImage, Followup, Item
from ..sources.base import Source
from ..stores.base import Store
from .base import StageExecutor
from .intake import Intake, IntakeOptions
from .options import RunOptions
from .publisher import END, BatchPublisher, FollowupWorker, PublishOptions
from .share_stage import ShareSettings, ShareStage
from .stages import (
    PostprocessOptions,
    ShareFileOptions,
    failure_from_error,
    failure_line,
    postprocess_item,
    with_source,
)
from .stop import StopControl
from .tracker import UnitTracker

log = logging.getLogger(__name__)

# After an abort (the drain deadline, a second Ctrl+C), how long stages get to notice it before the
# run stops waiting for them.
ABORT_GRACE_S = 3.0


@dataclass
class RunSummary:
    """The final account of a run (also written as JSON by ``--summary-json``)."""

    store: str
    run_dir: str
    published: int = 0
    already_published: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    items_per_s: float = 0.0
    busy_s: dict[str, float] = field(default_factory=dict)
    predictor_busy_fraction: float = 0.0
    units: dict[str, int] = field(default_factory=dict)
    stopped: str = ""
    # Why the run ended early, for the exit code: "" (it ran out of work or reached a limit), "stop"
    # (Ctrl+C, SIGTERM, STOP file), "rate_limit", "store_failed", "disk_full", "error".
    stop_cause: str = ""
    rate_limited_until: float = 0.0
    predictor: str = ""
    model_version: str = ""
    started_at: float = 0.0
    ended_at: float = 0.0
    # GSPLAT_UPLOAD=1: shares made, failed, and left for ``sharp-dataset share --missing``.
    shares: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # things the user should know (printed after the summary)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


class Runner:
    """Runs one pass of the pipeline; ``run()`` returns a RunSummary."""

    def __init__(
        self,
        source: Source,
        store: Store,
        predictor: Predictor,
        opts: RunOptions,
        metrics: Metrics,
        control: StopControl,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        share: ShareSettings | None = None,
        executor: StageExecutor | None = None,
    ) -> None:
        """``executor`` runs fetch/predict/post-process elsewhere (Ray); None: this process's threads."""
        self.source, self.store, self.predictor, self.opts = source, store, predictor, opts
        self.executor = executor
        self.metrics, self.control, self.http, self.clock = metrics, control, http_client, clock
        self.tracker = UnitTracker(on_abandon=lambda: metrics.count("source", "items_abandoned"))
        self.images_dir = opts.run_dir / "images"
        self.gaussians_dir = opts.run_dir / "gaussians"
        self.todo: queue.Queue[object] = queue.Queue(maxsize=max(2, opts.fetch.workers * 2))
        self.fetched: queue.Queue[object] = queue.Queue(maxsize=opts.fetch.queue_max)
        self.results: queue.Queue[object] = queue.Queue(maxsize=opts.post.queue_max)
        self._fetchers_left = opts.fetch.workers
        self._fetchers_lock = threading.Lock()
        self._pp_slots = threading.BoundedSemaphore(opts.post.workers * 2)
        self._pp_pool = ThreadPoolExecutor(opts.post.workers, thread_name_prefix="postprocess")
        self.fatal: BaseException | None = None
        self.stuck: list[str] | None = None  # stages left busy after the drain deadline
        self.disk_full = False
        self.started_at = 0.0
        kind = source.followup_kind
        self.followups = FollowupWorker(store, source.complete_followups, metrics) if kind else None
        self.intake = Intake(
            source, store, self.tracker,
            IntakeOptions(opts.client_id, opts.claim, model=(predictor.name, predictor.model_version)),
            metrics, control, self.todo,
        )
        self.share = (ShareStage(share, metrics, delete_after=not opts.batch.keep_run_files,
                                 aborting=lambda: self.control.aborting) if share is not None else None)
        self._stop_seen_at: float | None = None
        self.publisher = BatchPublisher(
            store, self.tracker,
            PublishOptions.of(opts.client_id, opts.claim, opts.batch, followup_kind=kind),
            metrics, control, self.results,
            on_published=self.followups.submit if self.followups else None,
            on_items_published=self.share.submit if self.share else None,
        )
        self._wire_source_hooks()
        self.pp_opts = PostprocessOptions(
            self.gaussians_dir, opts.subdir, opts.post.fanout, predictor.name, predictor.model_version, opts.client_id,
            formats=opts.post.formats,
            share=ShareFileOptions(share.use_small_ply, share.keep) if share is not None else None,
        )

    def _wire_source_hooks(self) -> None:
        """The source's run hooks (the Unsplash source budgets API calls per photo with them)."""
        source = self.source

        def known(ids: list[str]) -> set[str]:
            states = self.store.item_states(ids)
            return {i for i, s in states.items() if self.intake.skip_reason(s)}

        source.set_known_ids(known)
        source.set_stop_requested(lambda: self.control.stopping)

    def _adoptable_followups(self) -> list[Followup]:
        """Pending followups this run should complete: its own (a restart), and those of clients
        silent for longer than a lease lives. Another live client completes its own, so taking
        them now would repeat the call (e.g. a second Unsplash download tracking)."""
        kind = self.source.followup_kind
        now = time.time()
        return [
            f for f in self.store.pending_followups(kind)
            if f.client in ("", self.opts.client_id) or now - f.recorded_at > self.opts.claim.lease_ttl_s
        ]

    def _release_items(self, item_ids: list[str]) -> None:
        if item_ids:
            self.source.release_items(item_ids)

    # ---- entry point -------------------------------------------------------------------
    def run(self) -> RunSummary:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.gaussians_dir.mkdir(parents=True, exist_ok=True)
        started = self.clock()
        self.started_at = time.time()
        if self.followups:
            self.followups.thread.start()
            self.followups.submit(self._adoptable_followups())
        if self.share:
            self.share.start()
        # Daemon threads: a stage stuck past the drain deadline (a hung read) must not keep the
        # process alive once the run has released what it holds (see _wait_with_deadline).
        threads = [threading.Thread(target=self._guard(self._source_loop), name="source", daemon=True)]
        if self.executor is None:
            threads += [
                threading.Thread(target=self._guard(self._fetch_loop), name=f"fetch-{i}", daemon=True)
                for i in range(self.opts.fetch.workers)
            ]
            threads.append(threading.Thread(target=self._guard(self._predict_loop), name="predict", daemon=True))
        publisher = threading.Thread(target=self._guard(self.publisher.run), name="publish", daemon=True)
        for t in [*threads, publisher]:
            t.start()
        if self.executor is not None:
            threads += self.executor.start(self)
        if not self._wait_with_deadline(threads):
            self._give_up_on(threads)
        self._wait_for_publisher(publisher)
        self.control.announce()
        shares = self.share.finish(self._drain_left()).as_dict() if self.share else {}
        self._finish()
        if isinstance(self.intake.error, ConfigError):
            raise self.intake.error
        summary = self._summary(self.clock() - started)
        summary.shares = shares
        if self.executor is not None:
            self.executor.finish(summary)
        return summary

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        """A crash in one stage stops the run cleanly instead of hanging the others."""

        def wrapped() -> None:
            try:
                fn()
            except BaseException as exc:  # stage boundary: record, stop, let the rest drain
                log.exception("stage %s crashed", threading.current_thread().name)
                self.fatal = self.fatal or exc
                self.control.request_abort(f"internal error in {threading.current_thread().name}")
                if threading.current_thread().name == "predict":
                    self._put(self.results, END, force=True)

        return wrapped

    def _wait_with_deadline(self, threads: list[threading.Thread]) -> bool:
        """Wait for the stages; False when some are still busy ``ABORT_GRACE_S`` after the drain
        deadline (or after an abort): they are stuck (a read that never returns) and left behind."""
        abort_seen_at: float | None = None
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
                self.control.announce()
            now = self.clock()
            if self.control.stopping and self._stop_seen_at is None:
                self._stop_seen_at = now
            if self._stop_seen_at is not None and not self.control.aborting:
                if now - self._stop_seen_at > self.opts.stop_drain_secs:
                    self.control.request_abort(f"drain deadline of {self.opts.stop_drain_secs:.0f}s passed")
            if self.control.aborting and abort_seen_at is None:
                abort_seen_at = now
            if abort_seen_at is not None and now - abort_seen_at > ABORT_GRACE_S:
                return not any(t.is_alive() for t in threads)
        return True

    def _wait_for_publisher(self, publisher: threading.Thread) -> None:
        """The last batch is publishing: keep noticing a STOP file and announcing signals meanwhile
        (a stop ends the store's wait for its commit quota); ``ABORT_GRACE_S`` when stages were stuck."""
        if self.stuck is not None:
            publisher.join(ABORT_GRACE_S)
            return
        while publisher.is_alive():
            publisher.join(timeout=0.2)
            self.control.announce()
            if self.control.stopping and self._stop_seen_at is None:
                self._stop_seen_at = self.clock()

    def _give_up_on(self, threads: list[threading.Thread]) -> None:
        """Leave stuck stages behind: publish what is finished, then release (in ``_finish``)."""
        self.stuck = [t.name for t in threads if t.is_alive()]
        log.error("drain deadline passed with %s still busy; publishing what is finished, releasing the "
                  "rest and exiting", ", ".join(self.stuck))
        # A stuck item never settles, so its unit cannot be marked done: it is released with the rest.
        self._put(self.results, END, force=True)  # the publisher flushes its batch and returns

    def _drain_left(self) -> float:
        """Seconds the share stage may still take once publishing is over: the drain deadline
        (STOP_DRAIN_SECS), counted from a stop when there was one; none after an abort."""
        if self.control.aborting:
            return 0.0
        if self.control.stopping and self._stop_seen_at is None:
            self._stop_seen_at = self.clock()
        if self._stop_seen_at is None:
            return self.opts.stop_drain_secs
        return max(0.0, self._stop_seen_at + self.opts.stop_drain_secs - self.clock())

    def _finish(self) -> None:
        self._pp_pool.shutdown(wait=self.stuck is None)
        if self.followups:
            self.followups.inbox.put(END)
            self.followups.thread.join(timeout=max(5.0, self.opts.stop_drain_secs))
        held = self.tracker.held()
        if held and self.publisher.quota_spent is not None:
            # Releasing is a commit too: the leases expire (RANGE_LOCK_STALE_SECS), and a restart
            # with the same CLIENT_ID takes them back at once.
            log.warning("%d leases left to expire: the commit quota is spent", len(held))
        elif held and not self.publisher.failed_store:
            try:
                self.store.release(held, self.opts.client_id)
            except CommitQuotaSpent as exc:
                log.warning("%d leases left to expire: %s", len(held), exc)
            self.metrics.count("source", "units_released", len(held))

    # ---- stages --------------------------------------------------------------------------
    def _source_loop(self) -> None:
        try:
            self.intake.run()
        finally:
            for _ in range(self.opts.fetch.workers):
                self._put(self.todo, END, force=True)

    def _fetch_loop(self) -> None:
        try:
            while True:
                item = self.todo.get()
                if item is END:
                    return
                assert isinstance(item, Item)
                if self.control.stopping:
                    self.tracker.abandon(item.unit)
                    self._release_items([item.id])
                    continue
                self.control.wait_while_paused()
                self._fetch_one(item)
        finally:
            with self._fetchers_lock:
                self._fetchers_left -= 1
                last = self._fetchers_left == 0
            if last:
                self._put(self.fetched, END, force=True)

    def _fetch_one(self, item: Item) -> None:
        started = self.clock()
        try:
            fetched = fetch_item(
                item, self.images_dir, self.http, max_pixels=self.opts.fetch.max_pixels,
                max_bytes=self.opts.fetch.max_bytes, attempts=self.opts.fetch.attempts,
                deadline_s=self.opts.fetch.timeout_s,
            )
        except (TransientError, PermanentError, RateLimited, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                self.disk_full = True
                self.control.request_stop("disk full")
            self._fail(failure_from_error(item, "fetch", exc))
            return
        except Exception as exc:  # stage boundary: one bad input fails alone
            log.exception("fetching %s failed", item.id)
            self._fail(failure_from_error(item, "fetch", exc))
            return
        finally:
            self.metrics.busy("fetch", self.clock() - started)
        self.metrics.count("fetch", "ok")
        if not self._put(self.fetched, fetched):
            self.tracker.abandon(item.unit)

    def _predict_loop(self) -> None:
        ended = False
        while not ended:
            first = self.fetched.get()
            if first is END:
                break
            batch = [first]
            while len(batch) < self.predictor.batch_size:
                try:
                    nxt = self.fetched.get_nowait()
                except queue.Empty:
                    break
                if nxt is END:
                    ended = True
                    break
                batch.append(nxt)
            self._predict_batch([b for b in batch if isinstance(b, FetchedImage)])
        self._pp_pool.shutdown(wait=True)
        self._put(self.results, END, force=True)

    def _predict_batch(self, batch: list[FetchedImage]) -> None:
        if self.control.aborting or self.fatal is not None:
            for f in batch:
                self.tracker.abandon(f.item.unit)
            return
        started = self.clock()
        try:
            outputs = self.predictor.predict(batch)
        except FatalDeviceError as exc:
            self.fatal = exc
            log.error("prediction device failed: %s", exc)
            self._write_stop_file(str(exc))
            self.control.request_stop(f"prediction device failed: {exc}")
            for f in batch:
                self.tracker.abandon(f.item.unit)
            return
        self.metrics.busy("predict", self.clock() - started)
        self.metrics.count("predict", "images", len(batch))
        for fetched, out in zip(batch, outputs, strict=True):
            if isinstance(out, Failure):
                self._fail(with_source(out, fetched.item))
                continue
            self._pp_slots.acquire()
            self._pp_pool.submit(self._postprocess, fetched, out)

    def _postprocess(self, fetched: FetchedImage, raw: RawSplat) -> None:
        started = self.clock()
        try:
            processed = postprocess_item(fetched, raw, self.pp_opts)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.disk_full = True
                self.control.request_stop("disk full")
            self._fail(failure_from_error(fetched.item, "postprocess", TransientError(str(exc))))
            return
        except (PermanentError, TransientError, ValueError) as exc:
            self._fail(failure_from_error(fetched.item, "postprocess", exc))
            return
        except Exception as exc:  # stage boundary: one bad item fails alone
            log.exception("post-processing %s failed", fetched.item.id)
            self._fail(failure_from_error(fetched.item, "postprocess", exc))
            return
        finally:
            self._pp_slots.release()
            self.metrics.busy("postprocess", self.clock() - started)
        self.metrics.count("postprocess", "ok")
        self._put(self.results, processed, force=True)

    # ---- helpers -------------------------------------------------------------------------
    def fail(self, failure: Failure) -> None:
        """Record ``failure`` (for an executor's stages): released at the source, sent to the publisher."""
        self._fail(failure)

    def send_result(self, msg: object) -> None:
        """Hand a finished item (or ``END``) to the publisher; never dropped."""
        self._put(self.results, msg, force=True)

    def release_items(self, item_ids: list[str]) -> None:
        """Give items back to the source (an executor's unfinished work)."""
        self._release_items(item_ids)

    def write_stop_file(self, why: str) -> None:
        """The STOP file that keeps the next run from starting on a failed device."""
        self._write_stop_file(why)

    def _fail(self, failure: Failure) -> None:
        self._release_items([failure.item_id])
        log.info("%s", failure_line(failure))
        self._put(self.results, failure, force=True)

    def _put(self, q: queue.Queue[object], msg: object, force: bool = False) -> bool:
        """Blocking put that gives up on abort unless ``force`` (end markers, finished work)."""
        while True:
            try:
                q.put(msg, timeout=0.25)
                return True
            except queue.Full:
                if self.control.aborting and not force:
                    return False

    def _write_stop_file(self, why: str) -> None:
        try:
            self.control.stop_path.parent.mkdir(parents=True, exist_ok=True)
            self.control.stop_path.write_text(f"stopped by sharp-dataset: {why}\n", encoding="utf-8")
        except OSError as exc:
            log.warning("could not write the STOP file: %s", exc)

    def _summary(self, elapsed: float) -> RunSummary:
        snap = self.metrics.snapshot()
        counts = snap["counts"]
        published = counts.get("publish", {}).get("published", 0)
        busy = {k: round(v, 3) for k, v in snap["busy_s"].items()}
        window = self.metrics.active_window("predict")
        skipped = dict(counts.get("skipped", {}))
        skipped.update({k: v for k, v in self.source.skipped_counts().items() if v})
        summary = RunSummary(
            store=self.store.description,
            run_dir=str(self.opts.run_dir.resolve()),
            published=published,
            already_published=counts.get("publish", {}).get("already_published", 0),
            skipped=skipped,
            failed=dict(counts.get("failed", {})),
            elapsed_s=round(elapsed, 3),
            items_per_s=round(published / elapsed, 4) if elapsed > 0 else 0.0,
            busy_s=busy,
            predictor_busy_fraction=round(self.metrics.busy_seconds("predict") / window, 4) if window else 0.0,
            units={k: v for k, v in counts.get("source", {}).items() if k.startswith("units")},
            predictor=self.predictor.name,
            model_version=self.predictor.model_version,
            started_at=self.started_at,
            ended_at=time.time(),
            notes=self.intake.notes(),
        )
        quota = self.publisher.quota_spent
        if self.intake.rate_limited is not None:
            summary.rate_limited_until = time.time() + self.intake.rate_limited.retry_after_s
            summary.stopped, summary.stop_cause = "rate limited", "rate_limit"
        elif quota is not None:
            summary.rate_limited_until = time.time() + quota.retry_after_s
            summary.stopped, summary.stop_cause = "the store's commit quota is spent", "rate_limit"
        elif self.control.stopping:
            summary.stopped, summary.stop_cause = self.control.reason, "stop"
        elif self.intake.limit_reached:
            summary.stopped = self.intake.limit_reached
        if self.disk_full:
            summary.stop_cause = "disk_full"
        if self.publisher.failed_store:
            summary.stop_cause = "store_failed"
        if self.intake.error is not None:
            summary.stopped, summary.stop_cause = f"error: source: {self.intake.error}", "error"
        if self.fatal is not None:
            summary.stopped, summary.stop_cause = f"error: {self.fatal}", "error"
        if self.stuck is not None:
            summary.stopped = f"drain deadline passed; left busy: {', '.join(self.stuck)}"
            summary.stop_cause = "drain_deadline"
        return summary
