"""Predictors and a latency-injecting store wrapper for pipeline tests (no mocks of our code:
the real runner, sources and local store run; these add fixed costs and faults around them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.runner import Runner, RunOptions, RunSummary
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.predict.base import RawSplat, ReadyGaussians
from sharp_dataset_pipeline.predict.planar import lift_to_plane
from sharp_dataset_pipeline.records import Batch, Failure, FetchedImage
from sharp_dataset_pipeline.sources.folder import FolderSource
from sharp_dataset_pipeline.stores.base import PublishReceipt
from sharp_dataset_pipeline.stores.local import LocalStore


class TimedPredictor:
    """Sleeps ``per_image_s`` per image (a GPU's busy time) and records when each image finished."""

    name = "timed"
    model_version = "test"

    def __init__(self, per_image_s: float = 0.0, batch_size: int = 1, fail_ids: frozenset[str] = frozenset()):
        self.per_image_s, self.batch_size, self.fail_ids = per_image_s, batch_size, fail_ids
        self.finished_at: list[float] = []
        self.batches: list[int] = []
        self.on_batch = None

    def predict(self, images: Sequence[FetchedImage]) -> list[RawSplat | Failure]:
        time.sleep(self.per_image_s * len(images))
        self.batches.append(len(images))
        out: list[RawSplat | Failure] = []
        for img in images:
            self.finished_at.append(time.monotonic())
            if img.item.id in self.fail_ids:
                out.append(Failure(img.item.id, img.item.unit, "predict", "model_rejected", "test failure", False))
            else:
                out.append(ReadyGaussians(lift_to_plane(img.rgb, img.focal_px, img.width, img.height, 16)))
        if self.on_batch is not None:
            self.on_batch()
        return out

    def close(self) -> None:
        return None


class SlowPublishStore(LocalStore):
    """The real local store with a fixed delay added to every publish (a slow network store)."""

    def __init__(self, root: Path, delay_s: float) -> None:
        super().__init__(root)
        self.delay_s = delay_s
        self.published_at: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def publish(self, batch: Batch) -> PublishReceipt:
        time.sleep(self.delay_s)
        receipt = super().publish(batch)
        with self._lock:
            self.published_at.append((time.monotonic(), len(receipt.published_ids)))
        return receipt


def make_photos(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 255, (3, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((64, 48), Image.Resampling.BILINEAR).save(folder / f"{seed}_{i:04d}.jpg")


def run_pipeline(tmp: Path, photos: Path, store: LocalStore, predictor, control: StopControl | None = None,
                 **opts) -> tuple[RunSummary, Metrics]:
    metrics = Metrics()
    range_size = opts.pop("range_size", 300)
    options = RunOptions.of(client_id=opts.pop("client_id", "tester"), run_dir=tmp / "run", subdir="folder", **opts)
    control = control or StopControl(tmp / "control")
    summary = Runner(FolderSource(photos, range_size=range_size), store, predictor, options,
                     metrics, control).run()
    return summary, metrics
