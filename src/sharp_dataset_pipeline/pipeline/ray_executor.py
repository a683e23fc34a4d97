"""``--executor ray``: fetch, predict and post-process on Ray Data; intake and publishing stay here.

The driver (this process) keeps the source, the leases, the Unsplash governor, the tracking
reservations and the one governed publisher of ``Runner``. Admitted items go into a Ray queue;
long-running feeder tasks stream them into a dataset: fetch/decode as CPU tasks, prediction on
an actor pool with one resident predictor per GPU, post-processing as CPU tasks that write the
files into the run folder and return small metadata rows. The driver iterates those rows and hands
them to the publisher, so nothing Ray retries can publish twice (at-least-once compute,
exactly-once publish). Items that never come back (stop, abort, a lost task) leave their unit
not done; it is released and the next run does them.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, FatalDeviceError
from ..records import Failure, Item
from .publisher import END
from .ray_stages import (
    DONE,
    FAILURE,
    FATAL,
    FEED_END,
    PredictActor,
    feed_rows,
    fetch_rows,
    postprocess_rows,
    warm_worker,
)

if TYPE_CHECKING:
    from .runner import Runner, RunSummary

log = logging.getLogger(__name__)

GIB = 1 << 30
# Per GPU: ~3 output blocks per operator of 4 × 66 MB SHARP rows (see the README's Ray section).
STORE_PER_GPU = 8 * GIB
STORE_BASE = 2 * GIB
PUT_POLL_S = 0.25
PREDICT_CALL_BATCHES = 4
WARM_WORKERS, WARM_HOLD_S, WARM_TIMEOUT_S = 8, 0.5, 60.0
# Two calls run at once in each predictor actor: while one hands on its last rows and Ray sets up
# the next, the other's batches keep the device busy. The predictor itself is only ever called from
# one thread per actor (PredictActor), so two calls never share the GPU.
# A third call waits at the actor with its input already there.
ACTOR_CALLS = {"max_tasks_in_flight_per_actor": 3, "max_concurrent_calls_per_actor": 2,
               "enable_true_multi_threading": True}
IN_FLIGHT_CALLS = 4


@dataclass(frozen=True)
class RayOptions:
    """How the Ray executor sizes its stages; the defaults suit one node."""

    address: str = ""  # "" starts a local Ray; "auto", "ray://host:10001" join a cluster
    num_gpus: float | None = None  # logical GPUs of a local Ray (None: what the machine has)
    object_store_bytes: int | None = None  # local Ray only; None: sized from the GPUs and RAM
    actors: int | None = None  # predictor actors; None: one per GPU (at least one)
    fetch_batch: int = 4
    post_batch: int = 1
    # Photos per call of a predictor actor; None: PREDICT_CALL_BATCHES of the predictor's batches.
    # The actor predicts them batch by batch, each one's rows handed on while the next is predicted;
    # more per call spreads Ray's time between two calls over more images.
    predict_rows: int | None = None
    feeders: int = 1
    queue_max: int = 8
    # Items inside Ray at once; None: IN_FLIGHT_CALLS actor calls per actor + 2 fetch and post batches
    # per actor. The executor's only back-pressure (Ray Data's byte budgets are off, see _init_ray):
    # without it intake would push the whole source into Ray, and a stop would have to drain all of it.
    max_in_flight: int | None = None
    actor_cpus: float = 0.5  # leave CPUs to fetch/post tasks (an actor pool that takes them all hangs)
    fetch_cpus: float = 0.25
    post_cpus: float = 0.5
    progress_bars: bool = False


def local_gpu_count() -> int:
    """GPUs the NVIDIA driver lists (no torch import in the driver); 0 elsewhere."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def object_store_size(gpus: float, ram_bytes: int) -> int:
    """An explicit store for a local Ray: too small a store silently serialises the stages, Ray's
    default (30 % of RAM) is fine on big nodes but not on a laptop that runs other things."""
    want = STORE_BASE + STORE_PER_GPU * max(1, int(gpus))
    return int(max(GIB, min(want, 0.3 * ram_bytes)))


def in_flight_bound(opts: RayOptions, actors: int, predict_rows: int) -> int:
    """How many items may be inside Ray at once (``RayOptions.max_in_flight``, or the default).

    A stage waits for a full batch while its upstream is running, so items left in partial batches
    of all three stages ((fetch - 1) + (predict - 1) + (post - 1)) must not reach the bound: then no
    batch could ever fill. ConfigError for an explicit bound that low.
    """
    floor = opts.fetch_batch + predict_rows + opts.post_batch - 2
    if opts.max_in_flight is not None:
        if opts.max_in_flight < floor:
            raise ConfigError(f"max_in_flight {opts.max_in_flight}: at least fetch + predict + post batch - 2 "
                              f"= {floor} items must fit inside Ray, or no batch can fill")
        return opts.max_in_flight
    return max(floor, actors * (IN_FLIGHT_CALLS * predict_rows + 2 * (opts.fetch_batch + opts.post_batch)))


def _ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class _ActorTime:
    busy_s: float = 0.0
    first: float = 0.0
    last: float = 0.0
    images: int = 0
    batches: set[float] = field(default_factory=set)


class RayExecutor:
    """A ``StageExecutor`` on Ray Data (``Runner(..., executor=RayExecutor(opts))``)."""

    def __init__(self, opts: RayOptions) -> None:
        self.opts = opts
        self._owns_ray = False
        self._queue: Any = None
        self._inflight: dict[str, Item] = {}
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._max_in_flight = 8
        self._predict_rows = 1
        self._closed = False
        self._actors: dict[str, _ActorTime] = {}
        self._gpus = 0.0
        self._results_thread: threading.Thread | None = None

    # ---- StageExecutor ------------------------------------------------------------------
    def start(self, runner: Runner) -> list[threading.Thread]:
        """Connect to (or start) Ray, build the dataset, start the feed and result threads."""
        import ray
        from ray.util.queue import Queue

        self._init_ray(ray)
        self._warm_workers(ray)
        self._queue = Queue(maxsize=self.opts.queue_max, actor_options={"num_cpus": 0})
        dataset = self._dataset(runner)
        feed = threading.Thread(target=self._feed, args=(runner,), name="ray-feed")
        results = threading.Thread(target=self._results, args=(runner, dataset), name="ray-results", daemon=True)
        waiter = threading.Thread(target=self._wait, args=(runner, results), name="ray-stages")
        self._results_thread = results
        for t in (feed, results, waiter):
            t.start()
        return [feed, waiter]

    def finish(self, summary: RunSummary) -> None:
        """Add the GPU actors' busy fractions to the summary, then leave Ray."""
        actors = {
            name: {"images": a.images, "busy_s": round(a.busy_s, 3), "window_s": round(a.last - a.first, 3),
                   "first": a.first, "last": a.last,
                   "busy_fraction": round(a.busy_s / (a.last - a.first), 4) if a.last > a.first else 0.0}
            for name, a in sorted(self._actors.items())
        }
        busy = sum(a.busy_s for a in self._actors.values())
        window = sum(a.last - a.first for a in self._actors.values())
        summary.predictor_busy_fraction = round(busy / window, 4) if window > 0 else 0.0
        summary.extra["ray"] = {"gpus": self._gpus, "actors": actors,
                                "gpu_busy_fraction": summary.predictor_busy_fraction,
                                "predict_rows": self._predict_rows, "max_in_flight": self._max_in_flight}
        self.close()

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    # ---- set-up ---------------------------------------------------------------------------
    def _init_ray(self, ray: Any) -> None:
        from ray.data import DataContext

        if not ray.is_initialized():
            common = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
            if self.opts.address:
                ray.init(address=self.opts.address, **common)
            else:
                gpus = self.opts.num_gpus if self.opts.num_gpus is not None else None
                sizing = gpus if gpus is not None else local_gpu_count()
                store = self.opts.object_store_bytes or object_store_size(sizing, _ram_bytes())
                # "local": never attach by surprise to another Ray someone started on this host.
                ray.init(address="local", num_gpus=gpus, object_store_memory=store, **common)
            self._owns_ray = True
        self._gpus = float(ray.cluster_resources().get("GPU", 0.0))
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = self.opts.progress_bars
        ctx.print_on_execution_start = self.opts.progress_bars
        ctx.enable_auto_log_stats = False
        # Every row its own block. Ray Data gathers a task's output rows into blocks of up to 128 MiB
        # before passing them on: the feeder's small item rows would then wait for the end of the
        # run, all in one block for one actor. One row per block also keeps a 66 MB prediction from
        # sharing a block (Arrow's 2 GiB column limit).
        ctx.target_max_block_size = 1
        # A publisher waiting out a Hub rate limit must not fail the dataset after 30 min.
        ctx.execution_no_progress_timeout_s = -1
        # No per-operator budgets from Ray Data: ours is the bound (max_in_flight items inside Ray).
        # Ray Data 2.60 sizes its budgets from what its autoscaling coordinator reserved: one task per
        # operator plus each node's leftover rounded down to whole CPUs (2 CPUs asked for 1.01 leave
        # 0.99, which counts as 0). About 10 s into a run it re-plans on that, the operators upstream
        # are served first, and post-processing is left less than one task's CPU for as long as the
        # feeder task lives: once max_in_flight items wait in front of it, the run hangs.
        ctx.op_resource_reservation_enabled = False
        # Nor its byte-based hold on an operator whose outputs outweigh what the next one is reading:
        # with rows of a few KiB it held post-processing back while the cap was full in front of it.
        ctx.downstream_capacity_backpressure_ratio = None
        # Nor a thread in every task sampling its memory each second (psutil; CPU the stages need).
        ctx.memory_usage_poll_interval_s = None

    def _warm_workers(self, ray: Any) -> None:
        """Start the CPU task workers before the first photo (as many as could run at once, at
        most WARM_WORKERS); a cluster too busy to start them within WARM_TIMEOUT_S is not waited for."""
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        task_cpus = max(0.01, min(self.opts.fetch_cpus, self.opts.post_cpus))
        count = min(WARM_WORKERS, int(cpus / task_cpus))
        warm = ray.remote(num_cpus=task_cpus)(warm_worker)
        ray.wait([warm.remote(WARM_HOLD_S) for _ in range(count)], num_returns=count, timeout=WARM_TIMEOUT_S)

    def _dataset(self, runner: Runner) -> Any:
        import ray
        from ray.data import DataContext

        opts, ro = self.opts, runner.opts
        actors = opts.actors or max(1, int(self._gpus))
        if actors > 1 and self._gpus and actors > self._gpus:
            raise ConfigError(f"RAY_NUM_GPUS: {actors} predictor actors need {actors} GPUs, "
                              f"the cluster has {self._gpus:g}")
        rows = self._predict_rows = opts.predict_rows or PREDICT_CALL_BATCHES * max(1, runner.predictor.batch_size)
        self._max_in_flight = in_flight_bound(opts, actors, rows)
        # A task may hand on every row of its batch before Ray Data takes the first (default: 2):
        # with one row per block, the actor would otherwise wait on the driver between its rows.
        DataContext.get_current()._max_num_blocks_in_streaming_gen_buffer = max(
            2, opts.fetch_batch, rows, opts.post_batch)
        gpu_args = {"num_gpus": 1} if self._gpus >= 1 else {}
        # GSPLAT_UPLOAD: post-process tasks only write the file to share; the driver's publisher
        # feeds the runner's share stage, as in the thread executor.
        pp_opts = runner.pp_opts
        pp_opts = type(pp_opts)(**{**pp_opts.__dict__, "gaussians_dir": pp_opts.gaussians_dir.resolve()})
        seeds = ray.data.from_items([{"feeder": i} for i in range(opts.feeders)], override_num_blocks=opts.feeders)
        return (
            seeds.map_batches(feed_rows, batch_size=1, num_cpus=0.01,
                              fn_kwargs={"queue": self._queue})
            .map_batches(fetch_rows, batch_size=opts.fetch_batch, num_cpus=opts.fetch_cpus,
                         fn_kwargs={"opts": ro.fetch, "images_dir": runner.images_dir.resolve()})
            .map_batches(PredictActor, batch_size=rows,
                         compute=ray.data.ActorPoolStrategy(size=actors, **ACTOR_CALLS),
                         num_cpus=opts.actor_cpus, fn_constructor_kwargs={"predictor": runner.predictor},
                         **gpu_args)
            .map_batches(postprocess_rows, batch_size=opts.post_batch, num_cpus=opts.post_cpus,
                         fn_kwargs={"opts": pp_opts})
        )

    # ---- driver threads -------------------------------------------------------------------
    def _feed(self, runner: Runner) -> None:
        """Admitted items → the Ray queue, up to a fetch batch per put, until intake ends or a stop;
        then one END per feeder."""
        try:
            ended = False
            while not ended:
                items, ended = self._next_items(runner)
                admitted: list[Item] = []
                for item in items:
                    if not self._has_room():  # what is admitted goes in before waiting for room
                        self._put(runner, admitted)
                        admitted = []
                    if runner.control.stopping:
                        self._give_back(runner, [item])
                        continue
                    runner.control.wait_while_paused()
                    if self._admit(runner, item):
                        admitted.append(item)
                    else:
                        self._give_back(runner, [item])
                self._put(runner, admitted)
        finally:
            self._end_feed(runner)

    def _next_items(self, runner: Runner) -> tuple[list[Item], bool]:
        """The next admitted item (waiting for it) and those already behind it, up to a fetch batch;
        True once intake has ended."""
        items: list[Item] = []
        while len(items) < self.opts.fetch_batch:
            try:
                item = runner.todo.get() if not items else runner.todo.get_nowait()
            except queue.Empty:
                break
            if item is END:
                return items, True
            assert isinstance(item, Item)
            items.append(item)
        return items, False

    def _put(self, runner: Runner, items: list[Item]) -> None:
        """One queue entry for several items: one call to the queue actor, not one per item."""
        from ray.util.queue import Full

        if not items:
            return
        entry = [(i.id, pickle.dumps(i, protocol=pickle.HIGHEST_PROTOCOL)) for i in items]
        while True:
            try:
                self._queue.put(entry, timeout=PUT_POLL_S)
                return
            except Full:
                if runner.control.stopping:
                    self._give_back(runner, items)
                    return

    def _has_room(self) -> bool:
        with self._lock:
            return len(self._inflight) < self._max_in_flight

    def _admit(self, runner: Runner, item: Item) -> bool:
        """Wait until fewer than ``max_in_flight`` items are inside Ray, then count ``item`` in.
        False on a stop (the item is not started)."""
        with self._room:
            while len(self._inflight) >= self._max_in_flight:
                if runner.control.stopping:
                    return False
                self._room.wait(timeout=PUT_POLL_S)
            self._inflight[item.id] = item
            return True

    def _end_feed(self, runner: Runner) -> None:
        """On a stop, items still waiting in the queue are not started: give them back. Then end the feeders."""
        from ray.util.queue import Empty

        waiting: list[Item] = []
        while runner.control.stopping:
            try:
                entry = self._queue.get_nowait()
            except Empty:
                break
            waiting.extend(pickle.loads(blob) for _, blob in entry)
        self._give_back(runner, [w for w in waiting if isinstance(w, Item)])
        for _ in range(self.opts.feeders):
            self._queue.put(FEED_END)

    def _give_back(self, runner: Runner, items: list[Item]) -> None:
        with self._lock:
            for item in items:
                self._inflight.pop(item.id, None)
            self._room.notify_all()
        for item in items:
            runner.tracker.abandon(item.unit)
        runner.release_items([i.id for i in items])

    def _results(self, runner: Runner, dataset: Any) -> None:
        import ray

        try:
            for row in dataset.iter_rows():
                if self._closed:
                    return
                self._handle(runner, row["kind"], row["id"], row["payload"], json.loads(row["meta"]))
        except (ray.exceptions.RayError, ConfigError, OSError) as exc:
            log.error("the Ray dataset failed: %s", exc)
            runner.fatal = runner.fatal or exc
            runner.control.request_abort(f"Ray: {type(exc).__name__}")

    def _handle(self, runner: Runner, kind: str, item_id: str, payload: bytes, meta: dict[str, Any]) -> None:
        with self._lock:
            if self._closed or self._inflight.pop(item_id, None) is None:
                return  # a repeat of a row already handled (a re-executed task), or given back
            self._room.notify_all()
        msg = pickle.loads(payload)
        self._record(runner, kind, meta)
        if meta.get("disk_full"):
            runner.disk_full = True
            runner.control.request_stop("disk full")
        if kind == FATAL:
            detail = meta.get("detail", "")
            runner.fatal = runner.fatal or FatalDeviceError(detail)
            log.error("prediction device failed: %s", detail)
            runner.write_stop_file(detail)
            runner.control.request_stop(f"prediction device failed: {detail}")
            runner.tracker.abandon(msg.unit)
        elif kind == FAILURE and isinstance(msg, Failure):
            runner.fail(msg)
        elif kind == DONE:
            runner.send_result(msg)
        else:
            log.error("unexpected row kind %r for %s", kind, item_id)

    def _record(self, runner: Runner, kind: str, meta: dict[str, Any]) -> None:
        """Stage timings measured in the workers → the live metrics and the actors' busy account."""
        metrics = runner.metrics
        if "fetch_s" in meta:
            metrics.busy("fetch", meta["fetch_s"])
            if "predict_s" in meta or kind == DONE:
                metrics.count("fetch", "ok")
        if "actor" in meta:
            metrics.busy("predict", meta["predict_s"])
            metrics.count("predict", "images")
            a = self._actors.setdefault(meta["actor"], _ActorTime(first=meta["t0"], last=meta["t1"]))
            a.images += 1
            if meta["t0"] not in a.batches:
                a.batches.add(meta["t0"])
                a.busy_s += meta["t1"] - meta["t0"]
                a.first, a.last = min(a.first, meta["t0"]), max(a.last, meta["t1"])
        if "post_s" in meta:
            metrics.busy("postprocess", meta["post_s"])
            if kind == DONE:
                metrics.count("postprocess", "ok")

    def _wait(self, runner: Runner, results: threading.Thread) -> None:
        """Until the dataset is drained, or an abort: then whatever did not come back is given back."""
        while results.is_alive() and not runner.control.aborting:
            results.join(timeout=PUT_POLL_S)
        with self._lock:
            self._closed = True
            left = list(self._inflight.values())
            self._inflight.clear()
        if left:
            log.warning("%d items did not come back from Ray; their units stay open for the next run", len(left))
        for item in left:
            runner.tracker.abandon(item.unit)
        runner.release_items([i.id for i in left])
        runner.send_result(END)
