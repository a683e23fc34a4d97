"""Invariant 8: one bad input fails alone, recorded with a reason; transient failures are retried a
bounded number of times (across runs), permanent ones are not retried."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

from pipeline_utils import TimedPredictor, make_photos, run_pipeline  # noqa: E402

from sharp_dataset_pipeline.sources.folder import FolderSource  # noqa: E402
from sharp_dataset_pipeline.stores.local import LocalStore  # noqa: E402


def test_permanent_failure_is_recorded_once_and_never_retried(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 6)
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    items = [i for u in FolderSource(photos).units() for i in FolderSource(photos).items(u)]
    rejected = items[0].id if items[0].meta.get("source_path") != "broken.jpg" else items[1].id
    store = LocalStore(tmp_path / "store")
    store.open()
    summary, _ = run_pipeline(tmp_path, photos, store, TimedPredictor(fail_ids=frozenset({rejected})))
    assert summary.published == 5
    assert summary.failed == {"not_an_image": 1, "model_rejected": 1}
    again, _ = run_pipeline(tmp_path, photos, store, TimedPredictor())
    assert again.published == 0 and again.failed == {}
    # The unit is done (every item published or failed for good), so it is not even re-read.
    assert again.units == {"units_already_done": 1}
    states = store.item_states([rejected])
    assert states[rejected].failed_permanently and not states[rejected].published


def test_transient_failures_are_retried_a_bounded_number_of_runs(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    store = LocalStore(tmp_path / "store")
    store.open()
    target = next(iter(FolderSource(photos).items(next(iter(FolderSource(photos).units()))))).id

    class FlakyPredictor(TimedPredictor):
        def predict(self, images):  # type: ignore[no-untyped-def]
            from sharp_dataset_pipeline.records import Failure

            out = super().predict(images)
            return [Failure(i.item.id, i.item.unit, "predict", "device_busy", "flaky", True)
                    if i.item.id == target else o for i, o in zip(images, out, strict=True)]

    attempts = []
    for _ in range(3):
        summary, _ = run_pipeline(tmp_path, photos, store, FlakyPredictor(), max_item_attempts=3)
        attempts.append(summary.failed.get("device_busy", 0))
    assert attempts == [1, 1, 1]
    assert store.item_states([target])[target].transient_failures == 3
    # The third (last allowed) attempt settled the unit: it is done and not read again.
    last, _ = run_pipeline(tmp_path, photos, store, FlakyPredictor(), max_item_attempts=3)
    assert last.units == {"units_already_done": 1} and last.failed == {}
