"""Invariant 5: a stop never loses finished work: what was predicted is published, leases released."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from pipeline_utils import TimedPredictor, make_photos, run_pipeline  # noqa: E402

from sharp_dataset_pipeline.pipeline.stop import StopControl  # noqa: E402
from sharp_dataset_pipeline.stores.local import LocalStore  # noqa: E402


def test_stop_mid_run_publishes_everything_predicted_and_releases_leases(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 40)
    store = LocalStore(tmp_path / "store")
    store.open()
    control = StopControl(tmp_path / "control")
    predictor = TimedPredictor(per_image_s=0.01, batch_size=2)
    predictor.on_batch = lambda: len(predictor.finished_at) >= 10 and control.request_stop("test stop")
    summary, metrics = run_pipeline(tmp_path, photos, store, predictor, control=control, range_size=8,
                                    batch_size=4, download_workers=2)
    predicted = metrics.get("predict", "images")
    assert 10 <= predicted < 40
    assert summary.published == predicted == len(list(store.rows()))
    assert summary.stopped == "test stop"
    assert not [lease for lease in store.leases() if lease.owner == "tester"]
    # Resume finishes the rest, exactly once.
    store2 = LocalStore(tmp_path / "store")
    store2.open()
    summary2, _ = run_pipeline(tmp_path, photos, store2, TimedPredictor(), range_size=8)
    assert summary.published + summary2.published == 40
    ids = [r.id for r in store2.rows()]
    assert len(ids) == len(set(ids)) == 40
