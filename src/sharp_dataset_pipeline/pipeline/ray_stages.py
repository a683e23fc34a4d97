"""The stage functions as Ray Data UDFs: they run in Ray's worker processes, on any node.

Every row has the same four columns (``kind``, ``id``, ``payload``, ``meta``) from the feeder to
the driver: ``payload`` is the pickled record of the row's stage (an ``Item``, a ``FetchedImage``,
a prediction, a ``ProcessedItem`` or a ``Failure``), ``meta`` a JSON object with the stage timings
that the driver turns into the live metrics. A photo that fails becomes a ``failure`` row here:
Ray Data fails the whole dataset on one exception from a UDF, so none may escape per item.
Nothing here publishes or leases: Ray may run any of these twice (task retries, actor restarts).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import pickle
import socket
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import FatalDeviceError, PermanentError, RateLimited, TransientError
from ..fetch.fetcher import fetch_item
from ..predict.base import Predictor
from ..records import Failure, FetchedImage, Item
from .options import FetchPoolOptions
from .stages import PostprocessOptions, failure_from_error, postprocess_item, with_source

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

FEED_END = b""  # the feed queue's end marker, one per feeder task
FEED_POLL_S = 0.5

# Row kinds, in stage order; ``failure`` and ``fatal`` rows pass through the later stages untouched.
ITEM, FETCHED, PREDICTED, DONE, FAILURE, FATAL = "item", "fetched", "predicted", "done", "failure", "fatal"


@dataclass
class Rows:
    """Output of one UDF call, built row by row."""

    kind: list[str] = field(default_factory=list)
    id: list[str] = field(default_factory=list)
    payload: list[bytes] = field(default_factory=list)
    meta: list[str] = field(default_factory=list)

    def add(self, kind: str, item_id: str, payload: object, meta: dict[str, Any]) -> None:
        # Ray's cloudpickle: a predictor's result class may have come by value (a script, a test).
        from ray import cloudpickle

        blob = cloudpickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        self.kind.append(kind)
        self.id.append(item_id)
        self.payload.append(blob)
        self.meta.append(json.dumps(meta))

    def keep(self, kind: str, item_id: str, payload: bytes, meta: str) -> None:
        """Pass a row through unchanged (a failure from an earlier stage)."""
        self.kind.append(kind)
        self.id.append(item_id)
        self.payload.append(payload)
        self.meta.append(meta)

    def batch(self) -> dict[str, np.ndarray]:
        return {
            "kind": np.array(self.kind, dtype=object),
            "id": np.array(self.id, dtype=object),
            "payload": np.array(self.payload, dtype=object),
            "meta": np.array(self.meta, dtype=object),
        }


def _rows(batch: dict[str, np.ndarray]) -> Iterator[tuple[str, str, bytes, str]]:
    yield from zip(batch["kind"], batch["id"], batch["payload"], batch["meta"], strict=True)


def feed_rows(batch: dict[str, np.ndarray], *, queue: Any) -> Iterator[dict[str, np.ndarray]]:
    """One long-running feeder task: pull the driver's queue entries (each a list of
    ``(id, pickled item)``) until its FEED_END, one block of rows per item.

    Yielding as they come lets Ray stream them on while the driver keeps admitting;
    the driver's bound on the items inside Ray keeps intake from running ahead of the GPUs.
    """
    from ray.util.queue import Empty

    while True:
        try:
            entry = queue.get(block=True, timeout=FEED_POLL_S)
        except Empty:
            continue
        if entry == FEED_END:
            return
        rows = Rows()
        for item_id, blob in entry:
            rows.keep(ITEM, item_id, blob, "{}")
        yield rows.batch()


@functools.cache
def _worker_client() -> httpx.Client:
    """One HTTP client per worker process, kept for all the fetch tasks it runs (as the thread
    runner keeps one per fetch thread): making one costs ~40 ms of CPU (its TLS context), more than
    reading and decoding a small photo; its connections are reused too."""
    from ..net import make_client

    return make_client()


def warm_worker(hold_s: float) -> int:
    """A task with no work, run a few times at once before the first photo: each starts a worker
    process and imports these stages into it, so the first fetch and post tasks find one ready
    instead of starting it (and its HTTP client) while the GPUs wait. Holding a moment keeps the
    tasks on distinct workers."""
    _worker_client()
    time.sleep(hold_s)
    return os.getpid()


def fetch_rows(batch: dict[str, np.ndarray], *, opts: FetchPoolOptions, images_dir: Path) -> dict[str, np.ndarray]:
    """Download or read each photo into the run folder and decode it; one failure row per bad photo."""
    out = Rows()
    client = _worker_client()
    for kind, item_id, payload, meta in _rows(batch):
        if kind != ITEM:
            out.keep(kind, item_id, payload, meta)
            continue
        item: Item = pickle.loads(payload)
        started = time.perf_counter()
        info: dict[str, Any] = {}
        try:
            fetched = fetch_item(item, images_dir, client, max_pixels=opts.max_pixels,
                                 max_bytes=opts.max_bytes, attempts=opts.attempts,
                                 deadline_s=opts.timeout_s)
        except (TransientError, PermanentError, RateLimited, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                info["disk_full"] = True
            result: object = failure_from_error(item, "fetch", exc)
        except Exception as exc:  # stage boundary: one bad photo fails alone
            log.exception("fetching %s failed", item.id)
            result = failure_from_error(item, "fetch", exc)
        else:
            result = fetched
        info["fetch_s"] = time.perf_counter() - started
        out.add(FAILURE if isinstance(result, Failure) else FETCHED, item_id, result, info)
    return out.batch()


@dataclass
class _Chunk:
    """One ``predict`` call's images, and what came back (results, or the error it raised)."""

    todo: list[tuple[FetchedImage, dict[str, Any]]]
    t0: float = 0.0
    t1: float = 0.0
    results: list[object] = field(default_factory=list)
    error: BaseException | None = None


class PredictActor:
    """One resident predictor per actor (per GPU): built once, reused for every batch.

    A call gets several of the predictor's batches (``RayOptions.predict_rows``) and yields each
    one's rows as soon as it is predicted, while a second thread is already predicting the next:
    pickling a result and handing it to Ray never leaves the GPU idle, nor does Ray's time between
    two calls, once per several batches instead of once per batch.

    Ray restarts a killed actor and re-sends its batch; that repeats a prediction, never a
    publish (the driver publishes). The times of each predict call ride along so the driver can
    tell how busy each actor was.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        passed, todo = Rows(), []
        for kind, item_id, payload, meta in _rows(batch):
            if kind != FETCHED:
                passed.keep(kind, item_id, payload, meta)
            else:
                todo.append((pickle.loads(payload), json.loads(meta)))
        if passed.kind:
            yield passed.batch()
        size = max(1, self.predictor.batch_size)
        chunks = [_Chunk(todo[i:i + size]) for i in range(0, len(todo), size)]
        running: Future[_Chunk] | None = self._pool.submit(self._predict, chunks[0]) if chunks else None
        for index in range(len(chunks)):
            assert running is not None
            chunk = running.result()
            fatal = isinstance(chunk.error, FatalDeviceError)
            following = chunks[index + 1] if index + 1 < len(chunks) else None
            # The next chunk starts before this one's rows are built: the device stays busy.
            running = self._pool.submit(self._predict, following) if following and not fatal else None
            out = Rows()
            self._add_rows(chunk, out)
            for rest in chunks[index + 1:] if fatal else ():
                rest.error = chunk.error
                self._add_rows(rest, out)
            yield out.batch()
            if fatal:
                return

    def _predict(self, chunk: _Chunk) -> _Chunk:
        images = [f for f, _ in chunk.todo]
        chunk.t0 = time.time()
        try:
            chunk.results = list(self.predictor.predict(images))
        except FatalDeviceError as exc:
            chunk.error = exc
        except Exception as exc:  # stage boundary: the batch's photos fail, the run goes on
            log.exception("prediction failed for a batch of %d", len(images))
            chunk.results = [failure_from_error(f.item, "predict", exc) for f in images]
        chunk.t1 = time.time()
        return chunk

    def _add_rows(self, chunk: _Chunk, out: Rows) -> None:
        if isinstance(chunk.error, FatalDeviceError):
            for fetched, meta in chunk.todo:
                out.add(FATAL, fetched.item.id, fetched.item, {**meta, "detail": str(chunk.error)})
            return
        timing = {"actor": self.name, "t0": chunk.t0, "t1": chunk.t1,
                  "predict_s": (chunk.t1 - chunk.t0) / len(chunk.todo)}
        for (fetched, meta), result in zip(chunk.todo, chunk.results, strict=True):
            info = {**meta, **timing}
            if isinstance(result, Failure):
                out.add(FAILURE, fetched.item.id, with_source(result, fetched.item), info)
            else:
                # The pixels stay here: post-processing reads the image file, not the array.
                light = replace(fetched, rgb=np.zeros((0, 0, 3), dtype=np.uint8))
                try:
                    out.add(PREDICTED, fetched.item.id, (light, result), info)
                except (pickle.PicklingError, TypeError, AttributeError) as exc:  # fails alone, not the dataset
                    out.add(FAILURE, fetched.item.id, failure_from_error(fetched.item, "predict", exc), info)


def postprocess_rows(batch: dict[str, np.ndarray], *, opts: PostprocessOptions) -> dict[str, np.ndarray]:
    """Write each item's files into the run folder; hand back only the small index row + paths."""
    out = Rows()
    for kind, item_id, payload, meta_text in _rows(batch):
        if kind != PREDICTED:
            out.keep(kind, item_id, payload, meta_text)
            continue
        fetched, raw = pickle.loads(payload)
        meta = json.loads(meta_text)
        started = time.perf_counter()
        try:
            result: object = postprocess_item(fetched, raw, opts)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                meta["disk_full"] = True
            result = failure_from_error(fetched.item, "postprocess", TransientError(str(exc)))
        except (PermanentError, TransientError, ValueError) as exc:
            result = failure_from_error(fetched.item, "postprocess", exc)
        except Exception as exc:  # stage boundary: one bad item fails alone
            log.exception("post-processing %s failed", item_id)
            result = failure_from_error(fetched.item, "postprocess", exc)
        meta["post_s"] = time.perf_counter() - started
        out.add(FAILURE if isinstance(result, Failure) else DONE, item_id, result, meta)
    return out.batch()
