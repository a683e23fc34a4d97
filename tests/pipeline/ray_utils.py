"""A real local Ray for the Ray executor's tests (2 CPUs, one logical GPU, a small explicit store)."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.ray_executor import RayExecutor, RayOptions
from sharp_dataset_pipeline.pipeline.runner import Runner, RunOptions, RunSummary
from sharp_dataset_pipeline.pipeline.share_stage import ShareSettings
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.predict.base import RawSplat
from sharp_dataset_pipeline.predict.planar import PlanarPredictor
from sharp_dataset_pipeline.publish.share import GsplatClient, ShareOptions, StoreShareRecorder
from sharp_dataset_pipeline.records import Failure, FetchedImage
from sharp_dataset_pipeline.sources.folder import FolderSource
from sharp_dataset_pipeline.stores.local import LocalStore

STORE_BYTES = 512 << 20


BUSY_MARK = "predicting-"


def start_local_ray(num_gpus: int = 1) -> None:
    """A real local Ray cluster (Ray has no single-process mode any more)."""
    import ray

    register_helpers()
    ray.init(address="local", num_cpus=2, num_gpus=num_gpus, object_store_memory=STORE_BYTES,
             include_dashboard=False, logging_level="WARNING")


def register_helpers() -> None:
    """The test helpers travel to the workers by value: the workers do not have tests/ on their path."""
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class MarkingPredictor(PlanarPredictor):
    """The planar predictor, slowed down, leaving ``predicting-<pid>-<n>`` in ``marks`` while it predicts
    (so a test can kill the actor process in the middle of a batch)."""

    name = "marking"

    def __init__(self, marks: Path, per_image_s: float, batch_size: int = 2) -> None:
        super().__init__(resolution=32, batch_size=batch_size)
        self.marks, self.per_image_s, self.calls = marks, per_image_s, 0

    def predict(self, images: Sequence[FetchedImage]) -> list[RawSplat | Failure]:
        self.calls += 1
        (self.marks / f"{BUSY_MARK}{os.getpid()}-{self.calls}").write_text(",".join(i.item.id for i in images))
        time.sleep(self.per_image_s * len(images))
        return super().predict(images)


def run_once(tmp: Path, photos: Path, store_dir: Path, predictor: object, ray: RayOptions | None,
             range_size: int = 300, share_base: str = "", **opts: object) -> RunSummary:
    """One real run (thread runner when ``ray`` is None) of a folder into a local store; with
    ``share_base`` (the gsplat emulator's URL) the share stage shares the 50 most visible Gaussians."""
    store = LocalStore(store_dir)
    store.open()
    share = None
    if share_base:
        client = GsplatClient(ShareOptions(base=share_base, allow_private_base=True, request_timeout_s=30.0))
        share = ShareSettings(client=client, use_small_ply=True, keep=50, recorder=StoreShareRecorder(store.admin()))
    try:
        run_dir = tmp / f"run-{store_dir.name}-{time.monotonic_ns()}"
        options = RunOptions.of(client_id="tester", run_dir=run_dir, subdir="folder", batch_size=4,
                                batch_wait_s=0.2, **opts)  # type: ignore[arg-type]
        executor = RayExecutor(ray) if ray is not None else None
        return Runner(FolderSource(photos, range_size=range_size), store, predictor, options,  # type: ignore[arg-type]
                      Metrics(), StopControl(tmp / "control"), executor=executor, share=share).run()
    finally:
        store.close()


def failures(store_dir: Path) -> dict[str, tuple[str, str]]:
    """source → (stage, reason) of every recorded failure."""
    with sqlite3.connect(store_dir / ".coord" / "ledger.sqlite3") as conn:
        return {src: (stage, reason) for src, stage, reason in conn.execute(
            "SELECT source, stage, reason FROM failures")}


def kill_first_busy_actor(marks: Path, timeout_s: float = 60) -> int:
    """SIGKILL the first process seen predicting; its pid."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = sorted(marks.glob(f"{BUSY_MARK}*"))
        if found:
            pid = int(found[0].name[len(BUSY_MARK):].split("-")[0])
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.02)
    raise AssertionError("no actor started predicting")
