"""The publish stage with the real local store: an item that fails at publish time fails alone.

Before, a file changed after validation (or a repeated id) failed the whole publish step and the
publisher stopped the run; now the store publishes the rest, and the publisher counts the failure,
settles its unit (not done while the item may be retried) and goes on.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from pathlib import Path

from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.publisher import END, BatchPublisher, PublishOptions
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.pipeline.tracker import UnitTracker
from sharp_dataset_pipeline.records import IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.stores.local import LocalStore


def make_item(work: Path, item_id: str, unit: str, seed: int = 0) -> ProcessedItem:
    """A finished item as post-processing hands it over: files on disk, their sizes and hashes in the row."""
    work.mkdir(parents=True, exist_ok=True)
    row = IndexRow(id=item_id, source="folder", unit=unit)
    files = []
    for kind, ext in (("image", "jpg"), ("ply", "ply")):
        data = hashlib.sha256(f"{item_id}{kind}{seed}".encode()).digest() * 8
        local = work / f"{item_id}-{seed}.{ext}"
        local.write_bytes(data)
        repo, digest = f"photos/{item_id}/{item_id}.{ext}", hashlib.sha256(data).hexdigest()
        files.append(PublishedFile(kind, repo, local, len(data), digest))
        setattr(row, f"{kind}_path", repo)
        setattr(row, f"{kind}_size", len(data))
        setattr(row, f"{kind}_sha256", digest)
    return ProcessedItem(row, files)


def _publish_all(store: LocalStore, tmp_path: Path, units: dict[str, list], batch_size: int = 32) -> tuple:
    tracker = UnitTracker()
    for unit, items in units.items():
        tracker.open(unit)
        for _ in items:
            tracker.admit(unit)
        tracker.close(unit, complete=True)
    inbox: queue.Queue[object] = queue.Queue()
    for items in units.values():
        for pi in items:
            inbox.put(pi)
    inbox.put(END)
    metrics, control = Metrics(), StopControl(tmp_path / "control")
    publisher = BatchPublisher(store, tracker, PublishOptions("c1", batch_size, 60.0, 600.0, 3), metrics, control,
                               inbox)
    thread = threading.Thread(target=publisher.run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    return publisher, metrics.snapshot()["counts"], control


def test_a_changed_file_fails_its_item_and_the_run_goes_on(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    store.open()
    good = [make_item(tmp_path / "w", f"g{k}", unit="u/good") for k in range(2)]
    mixed = [make_item(tmp_path / "w", f"m{k}", unit="u/mixed") for k in range(3)]
    mixed[1].files[1].local_path.write_bytes(b"changed after validation")
    twin = make_item(tmp_path / "twin", "g0", unit="u/good", seed=5)  # a repeated id
    publisher, counts, control = _publish_all(store, tmp_path, {"u/good": [*good, twin], "u/mixed": mixed})
    assert not publisher.failed_store and not control.stopping
    assert counts["publish"]["published"] == 4
    assert counts["failed"] == {"file_changed": 1, "duplicate_id": 1}
    status = store.unit_status(["u/good", "u/mixed"])
    assert status["u/good"].done  # its duplicate failed for good: nothing left to do
    assert not status["u/mixed"].done and status["u/mixed"].failed == 1  # m1 is retried by a later run
    assert store.item_states(["m1"])["m1"].transient_failures == 1
    store.close()
