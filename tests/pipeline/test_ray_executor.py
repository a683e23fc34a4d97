"""--executor ray on a real local Ray (2 CPUs, one logical GPU): same results as the thread runner,
exactly once, with a bad photo and with the prediction actor killed in the middle of a batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_utils import make_photos
from ray_utils import MarkingPredictor, failures, kill_first_busy_actor, run_once, start_local_ray

from e2e.e2e_utils import check_consistent, read_rows
from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.pipeline.ray_executor import RayOptions, in_flight_bound
from sharp_dataset_pipeline.pipeline.runner import RunSummary
from sharp_dataset_pipeline.predict.planar import PlanarPredictor

ray = pytest.importorskip("ray")  # CI installs the [ray] extra, so nothing here is skipped there

# Fields that say when and by whom, not what: they differ between any two runs.
RUN_FIELDS = {"processed_at", "client_id"}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    start_local_ray(num_gpus=1)
    yield
    ray.shutdown()


def _comparable(store: Path) -> dict[str, dict]:
    return {r["id"]: {k: v for k, v in r.items() if k not in RUN_FIELDS} for r in read_rows(store)}


def test_folder_run_matches_thread_runner_and_bad_photo_fails_alone(local_ray: None, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 9)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    threaded = run_once(tmp_path, photos, tmp_path / "threads", PlanarPredictor(resolution=32), None)
    on_ray = run_once(tmp_path, photos, tmp_path / "ray", PlanarPredictor(resolution=32, batch_size=2),
                      RayOptions())
    assert threaded.published == on_ray.published == 9
    rows = check_consistent(tmp_path / "ray")
    assert len(rows) == len({r["id"] for r in rows}) == 9
    assert _comparable(tmp_path / "ray") == _comparable(tmp_path / "threads")
    # The broken file failed alone, for the same recorded reason as with threads.
    assert failures(tmp_path / "ray") == failures(tmp_path / "threads")
    assert list(failures(tmp_path / "ray")) == ["broken.jpg"]
    assert on_ray.failed == threaded.failed and on_ray.failed_total == 1
    # The summary accounts for the actor that predicted all of them.
    actors = on_ray.extra["ray"]["actors"]
    assert sum(a["images"] for a in actors.values()) == 9
    assert 0 < on_ray.predictor_busy_fraction <= 1
    assert {"fetch", "predict", "postprocess", "publish"} <= set(on_ray.busy_s)


def test_actor_killed_mid_batch_loses_and_repeats_nothing(local_ray: None, tmp_path: Path) -> None:
    photos, marks = tmp_path / "photos", tmp_path / "marks"
    make_photos(photos, 12)
    marks.mkdir()
    killed: list[int] = []
    killer = threading.Thread(target=lambda: killed.append(kill_first_busy_actor(marks)))
    killer.start()
    summary = run_once(tmp_path, photos, tmp_path / "out", MarkingPredictor(marks, per_image_s=0.3), RayOptions())
    killer.join()
    pids = {int(m.name.split("-")[1]) for m in marks.iterdir()}
    assert killed and killed[0] in pids and len(pids) == 2, (killed, pids)  # killed, then a restarted actor
    rows = check_consistent(tmp_path / "out")
    assert summary.published == len(rows) == len({r["id"] for r in rows}) == 12
    assert summary.failed_total == 0


def test_stop_file_publishes_in_flight_then_next_run_does_the_rest(local_ray: None, tmp_path: Path) -> None:
    """Results stream to the publisher during the run (not at its end); a STOP file drains what is
    in flight, gives the rest back, and the next run publishes exactly what was left."""
    photos, marks, store = tmp_path / "photos", tmp_path / "marks", tmp_path / "out"
    make_photos(photos, 40)
    marks.mkdir()
    stop_file = tmp_path / "control" / "STOP"

    def stop_after_first_publish() -> None:
        while not (store / "data").exists() or not read_rows(store):
            time.sleep(0.02)
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        stop_file.write_text("test\n")

    stopper = threading.Thread(target=stop_after_first_publish, daemon=True)
    stopper.start()
    first = run_once(tmp_path, photos, store, MarkingPredictor(marks, per_image_s=0.1),
                     RayOptions(max_in_flight=8, predict_rows=2), range_size=8)
    stop_file.unlink()
    assert first.stop_cause == "stop" and 0 < first.published < 40, (first.stop_cause, first.published)
    assert first.units.get("units_released", 0) >= 1
    second = run_once(tmp_path, photos, store, MarkingPredictor(marks, per_image_s=0.0), RayOptions(),
                      range_size=8)
    assert (second.published, second.already_published) == (40 - first.published, 0)
    rows = check_consistent(store)
    assert len(rows) == len({r["id"] for r in rows}) == 40


def test_more_items_than_the_in_flight_cap_are_all_published_once(local_ray: None, tmp_path: Path) -> None:
    """Six times as many photos as ``max_in_flight``, in a run that outlasts Ray Data's first resource
    re-plan (about 10 s in): every photo is published exactly once. Before the executor switched Ray
    Data's per-operator budgets off, the re-plan left post-processing less than one task's CPU for
    as long as the feeder task lived, the cap filled up in front of it and the run hung."""
    photos, marks, store = tmp_path / "photos", tmp_path / "marks", tmp_path / "out"
    n = 48
    make_photos(photos, n)
    marks.mkdir()
    stop_file = tmp_path / "control" / "STOP"
    done: list[RunSummary | Exception] = []
    # 0.3 s per image, one at a time: the run lasts well past the re-plan.
    predictor = MarkingPredictor(marks, per_image_s=0.3, batch_size=1)

    def run_it() -> None:
        try:
            done.append(run_once(tmp_path, photos, store, predictor, RayOptions(max_in_flight=8)))
        except Exception as exc:  # handed to the test's thread, which fails with it
            done.append(exc)

    run = threading.Thread(target=run_it)
    run.start()
    run.join(timeout=120)
    if run.is_alive():  # a hang: stop it so the test fails with what it published, not by timing out
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        stop_file.write_text("test: no progress\n")
        run.join(timeout=60)
    assert done, "the run neither finished nor stopped"
    summary = done[0]
    if isinstance(summary, Exception):
        raise summary
    rows = check_consistent(store)
    assert summary.stop_cause != "stop", f"the run hung after publishing {summary.published} of {n}"
    assert summary.published == len(rows) == len({r["id"] for r in rows}) == n
    assert sorted(r["source_path"] for r in rows) == sorted(p.name for p in photos.iterdir())
    assert summary.failed_total == 0


def test_in_flight_bound_leaves_room_for_every_stage_to_fill_a_batch() -> None:
    """Items left in partial batches of fetch, predict and post must never be all there is inside Ray."""
    opts = RayOptions(fetch_batch=4, post_batch=2)
    assert in_flight_bound(RayOptions(fetch_batch=4, post_batch=2, max_in_flight=8), 1, 4) == 8
    with pytest.raises(ConfigError, match="at least fetch"):
        in_flight_bound(RayOptions(fetch_batch=4, post_batch=2, max_in_flight=7), 1, 4)
    # The default grows with the actors and the photos per actor call, and is never below the floor.
    one, two = in_flight_bound(opts, 1, 4), in_flight_bound(opts, 2, 4)
    assert 8 <= one < two == 2 * one
    assert in_flight_bound(opts, 1, 16) > one


def test_ray_run_feeds_the_share_stage_from_the_driver(local_ray: None, tmp_path: Path) -> None:
    """GSPLAT_UPLOAD=1 with --executor ray: post-process tasks only write the small PLY; the driver's
    publisher feeds the share stage, whose shares land in the ledger and the index files."""
    from emulators.gsplat import GsplatEmulator
    from sharp_dataset_pipeline.splat.ply import read_ply

    photos = tmp_path / "photos"
    make_photos(photos, 4, seed=5)
    with GsplatEmulator() as emu:
        summary = run_once(tmp_path, photos, tmp_path / "out", PlanarPredictor(resolution=32, batch_size=2),
                           RayOptions(), share_base=emu.base_url)
        uploaded = [read_ply(emu.model_bytes(o["modelFileUrl"])).count for o in emu.orders.values()]
    assert summary.published == 4
    assert summary.shares == {"shared": 4, "failed": 0, "left_for_share_missing": 0}
    rows = check_consistent(tmp_path / "out")
    assert len(rows) == 4 and all(r["gsplat_share_id"] in emu.orders for r in rows)
    assert uploaded == [50] * 4
