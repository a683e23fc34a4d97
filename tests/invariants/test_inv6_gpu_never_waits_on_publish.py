"""Invariant 6: the predictor never waits on the network or the store while it has input."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from pipeline_utils import SlowPublishStore, TimedPredictor, make_photos, run_pipeline  # noqa: E402


def test_slow_publish_does_not_hold_the_predictor(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 40)
    store = SlowPublishStore(tmp_path / "store", delay_s=0.5)
    store.open()
    predictor = TimedPredictor(per_image_s=0.0)
    summary, _ = run_pipeline(tmp_path, photos, store, predictor, batch_size=4, batch_wait_s=0.0)
    assert summary.published == 40
    last_prediction = predictor.finished_at[-1]
    published_by_then = sum(n for t, n in store.published_at if t <= last_prediction)
    # Publishing 40 items takes >= 10 batches x 0.5 s; the predictor finished long before.
    assert published_by_then <= 20, published_by_then
