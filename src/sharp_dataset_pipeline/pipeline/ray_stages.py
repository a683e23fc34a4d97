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
import json
import logging
import os
import pickle
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FatalDeviceError, PermanentError, RateLimited, TransientError
from ..fetch.fetcher import fetch_item
from ..predict.base import Predictor
from ..records import Failure, FetchedImage, Item
from .options import FetchPoolOptions
from .stages import PostprocessOptions, failure_from_error, postprocess_item, with_source

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


def feed_rows(batch: dict[str, np.ndarray], *, queue: Any, chunk: int) -> Iterator[dict[str, np.ndarray]]:
    """One long-running feeder task: pull pickled items from the driver's queue until its FEED_END.

    Yielding small blocks as they come lets Ray stream them on while the driver keeps admitting;
    Ray's back-pressure on this generator bounds how far intake runs ahead of the GPUs.
    """
    from ray.util.queue import Empty

    while True:
        try:
            first = queue.get(block=True, timeout=FEED_POLL_S)
        except Empty:
            continue
        ended, blobs = first == FEED_END, [] if first == FEED_END else [first]
        while not ended and len(blobs) < chunk:
            try:
                nxt = queue.get_nowait()
            except Empty:
                break
            ended = nxt == FEED_END
            if not ended:
                blobs.append(nxt)
        if blobs:
            rows = Rows()
            for blob in blobs:
                item: Item = pickle.loads(blob)
                rows.keep(ITEM, item.id, blob, "{}")
            yield rows.batch()
        if ended:
            return


def fetch_rows(batch: dict[str, np.ndarray], *, opts: FetchPoolOptions, images_dir: Path) -> dict[str, np.ndarray]:
    """Download or read each photo into the run folder and decode it; one failure row per bad photo."""
    from ..net import make_client

    out = Rows()
    with make_client() as client:
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


class PredictActor:
    """One resident predictor per actor (per GPU): built once, reused for every batch.

    Ray restarts a killed actor and re-sends its batch; that repeats a prediction, never a
    publish (the driver publishes). The times of each call ride along so the driver can tell
    how busy each actor was.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = Rows()
        todo: list[tuple[FetchedImage, dict[str, Any]]] = []
        for kind, item_id, payload, meta in _rows(batch):
            if kind != FETCHED:
                out.keep(kind, item_id, payload, meta)
            else:
                todo.append((pickle.loads(payload), json.loads(meta)))
        if todo:
            self._predict(todo, out)
        return out.batch()

    def _predict(self, todo: list[tuple[FetchedImage, dict[str, Any]]], out: Rows) -> None:
        images = [f for f, _ in todo]
        t0 = time.time()
        try:
            results: list[object] = list(self.predictor.predict(images))
        except FatalDeviceError as exc:
            for fetched, meta in todo:
                out.add(FATAL, fetched.item.id, fetched.item, {**meta, "detail": str(exc)})
            return
        except Exception as exc:  # stage boundary: the batch's photos fail, the run goes on
            log.exception("prediction failed for a batch of %d", len(images))
            results = [failure_from_error(f.item, "predict", exc) for f in images]
        t1 = time.time()
        timing = {"actor": self.name, "t0": t0, "t1": t1, "predict_s": (t1 - t0) / len(images)}
        for (fetched, meta), result in zip(todo, results, strict=True):
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
