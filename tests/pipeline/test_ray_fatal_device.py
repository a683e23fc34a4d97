"""A fatal device error inside the Ray prediction actor, which predicts several batches per call:
the batches already predicted are published, the failed one and those behind it are given back
(never recorded as failures), the STOP file keeps the next run off the broken device, and a later
run on a working device publishes exactly what was left."""

from __future__ import annotations

import hashlib
import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from pipeline_utils import make_photos
from ray_utils import failures, register_helpers, run_once, start_local_ray

from e2e.e2e_utils import check_consistent
from sharp_dataset_pipeline.errors import FatalDeviceError
from sharp_dataset_pipeline.pipeline.ray_executor import RayOptions
from sharp_dataset_pipeline.pipeline.ray_stages import FATAL, FETCHED, PREDICTED, PredictActor, Rows
from sharp_dataset_pipeline.predict.base import RawSplat
from sharp_dataset_pipeline.predict.planar import PlanarPredictor
from sharp_dataset_pipeline.records import Failure, FetchedImage, Item

ray = pytest.importorskip("ray")  # CI installs the [ray] extra, so nothing here is skipped there


class DyingPredictor(PlanarPredictor):
    """The planar predictor until its ``dies_on``-th call, which raises the fatal device error
    (CUDA's "device-side assert" class of failure: the device is unusable from then on)."""

    name = "dying"

    def __init__(self, dies_on: int, batch_size: int = 2) -> None:
        super().__init__(resolution=32, batch_size=batch_size)
        self.dies_on, self.calls = dies_on, 0

    def predict(self, images: Sequence[FetchedImage]) -> list[RawSplat | Failure]:
        self.calls += 1
        if self.calls >= self.dies_on:
            raise FatalDeviceError("CUDA error: device-side assert triggered")
        return super().predict(images)


def _fetched(n: int) -> dict[str, np.ndarray]:
    rows = Rows()
    for i in range(n):
        rgb = np.full((24, 32, 3), 40 + i, dtype=np.uint8)
        item = Item(id=f"img{i}", source="folder", unit="folder:0", offset=i)
        fetched = FetchedImage(item=item, original_path=Path(f"/nonexistent/img{i}.jpg"), ext="jpg", rgb=rgb,
                               width=32, height=24, focal_px=30.0, focal_source="default", size=1,
                               sha256=hashlib.sha256(bytes([i])).hexdigest())
        rows.keep(FETCHED, item.id, pickle.dumps(fetched), "{}")
    return rows.batch()


def _kinds(out: Iterator[dict[str, np.ndarray]]) -> list[tuple[str, str]]:
    return [(str(k), str(i)) for batch in out for k, i in zip(batch["kind"], batch["id"], strict=True)]


def test_actor_stops_predicting_at_the_fatal_batch_and_hands_back_the_rest() -> None:
    register_helpers()
    predictor = DyingPredictor(dies_on=2, batch_size=2)
    rows = _kinds(PredictActor(predictor)(_fetched(7)))  # four of the predictor's batches in one call
    assert rows[:2] == [(PREDICTED, "img0"), (PREDICTED, "img1")]
    assert rows[2:] == [(FATAL, f"img{i}") for i in range(2, 7)]
    # The batches behind the fatal one never reach the broken device.
    assert predictor.calls == 2


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    start_local_ray(num_gpus=1)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers lack tests/ on their path
    yield
    ray.shutdown()


def test_fatal_device_error_on_ray_publishes_what_was_predicted_then_stops(local_ray: None,
                                                                             tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 12)
    first = run_once(tmp_path, photos, store, DyingPredictor(dies_on=3),
                     RayOptions(max_in_flight=12, predict_rows=3), range_size=4)
    assert first.stop_cause == "error", first.stop_cause
    stop_file = tmp_path / "control" / "STOP"
    assert "device-side assert" in stop_file.read_text()
    rows = check_consistent(store)
    # Two good batches of two before the device failed; nothing of the failed batch is published.
    assert 2 <= len(rows) == first.published < 12
    assert failures(store) == {}  # a broken device is not the photos' fault
    stop_file.unlink()
    second = run_once(tmp_path, photos, store, PlanarPredictor(resolution=32, batch_size=2), RayOptions(),
                      range_size=4)
    assert second.published == 12 - first.published
    rows = check_consistent(store)
    assert len(rows) == len({r["id"] for r in rows}) == 12
