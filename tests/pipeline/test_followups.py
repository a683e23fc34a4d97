"""Followups the source cannot complete yet are retried in the run, and what is left stays recorded."""

from __future__ import annotations

from pathlib import Path

from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.publisher import END, FollowupWorker
from sharp_dataset_pipeline.records import Batch, Followup, IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.stores.local import LocalStore


def _publish_with_followups(store: LocalStore, tmp: Path, ids: list[str]) -> list[Followup]:
    items, followups = [], []
    for item_id in ids:
        f = tmp / f"{item_id}.jpg"
        f.write_bytes(item_id.encode())
        import hashlib

        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        row = IndexRow(id=item_id, source="t", unit="t/0", image_path=f"t/{item_id}/{item_id}.jpg",
                       image_size=f.stat().st_size, image_sha256=digest)
        items.append(ProcessedItem(row, [PublishedFile("image", row.image_path, f, row.image_size, digest)]))
        followups.append(Followup("track", item_id, f"https://example.invalid/{item_id}"))
    store.publish(Batch(client_id="c", items=items, followups=followups))
    return followups


def test_followups_retried_until_the_source_can_complete_them(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.open()
    followups = _publish_with_followups(store, tmp_path, ["a", "b", "c"])
    assert {f.item_id for f in store.pending_followups("track")} == {"a", "b", "c"}
    calls: list[list[str]] = []
    pending_at_call: list[set[str]] = []

    def complete(todo: list[Followup]) -> list[Followup]:
        calls.append([f.item_id for f in todo])
        pending_at_call.append({f.item_id for f in store.pending_followups("track")})
        return [] if len(calls) == 1 else [f for f in todo if f.item_id != "c"]  # quota back, "c" still failing

    worker = FollowupWorker(store, complete, Metrics(), retry_s=0.05)
    worker.thread.start()
    worker.submit(followups)
    worker.inbox.put(END)
    worker.thread.join(timeout=10)
    # One call per followup; a refusal ends the pass, and the next pass starts where it stopped.
    assert calls == [["a"], ["a"], ["b"], ["c"]]
    # Each completion is in the store before the next call is made (a kill repeats one call at most).
    assert pending_at_call == [{"a", "b", "c"}, {"a", "b", "c"}, {"b", "c"}, {"c"}]
    assert [f.item_id for f in store.pending_followups("track")] == ["c"]


def test_pending_followups_say_who_recorded_them_and_when(tmp_path: Path) -> None:
    import time

    store = LocalStore(tmp_path / "store")
    store.open()
    before = time.time()
    _publish_with_followups(store, tmp_path, ["x"])
    (pending,) = store.pending_followups("track")
    assert pending.client == "c" and before - 1 <= pending.recorded_at <= time.time() + 1
