"""A worker node removed mid-run (``ray.cluster_utils.Cluster``): nothing lost, nothing published twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_utils import make_photos
from ray_utils import BUSY_MARK, MarkingPredictor, register_helpers, run_once

from e2e.e2e_utils import check_consistent
from sharp_dataset_pipeline.pipeline.ray_executor import RayOptions
from sharp_dataset_pipeline.pipeline.runner import RunSummary

ray = pytest.importorskip("ray")  # CI installs the [ray] extra, so nothing here is skipped there
cluster_utils = pytest.importorskip("ray.cluster_utils")

N = 24


@pytest.fixture
def three_nodes() -> Iterator[tuple[object, list[object]]]:
    """A head with 1 CPU and two workers with 1 CPU and one logical GPU each."""
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 256 << 20, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=256 << 20) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="WARNING")
    register_helpers()
    cluster.wait_for_nodes()
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def test_worker_node_removed_mid_run(three_nodes: tuple[object, list[object]], tmp_path: Path) -> None:
    cluster, workers = three_nodes
    photos, marks = tmp_path / "photos", tmp_path / "marks"
    make_photos(photos, N)
    marks.mkdir()
    result: list[RunSummary] = []
    run = threading.Thread(target=lambda: result.append(run_once(
        tmp_path, photos, tmp_path / "out", MarkingPredictor(marks, per_image_s=0.2, batch_size=1),
        RayOptions(actors=2))))
    run.start()
    # Topology changes from the main thread (Ray's node start/stop uses signals).
    deadline = time.monotonic() + 120
    while len({m.name.split("-")[1] for m in marks.glob(f"{BUSY_MARK}*")}) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert time.monotonic() < deadline, "both actors never predicted"
    cluster.remove_node(workers[1])  # type: ignore[attr-defined]
    run.join(timeout=240)
    assert not run.is_alive() and result
    rows = check_consistent(tmp_path / "out")
    assert result[0].published == len(rows) == len({r["id"] for r in rows}) == N
    assert result[0].failed_total == 0
