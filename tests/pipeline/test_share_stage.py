"""The share stage after publish (GSPLAT_UPLOAD=1), through the real runner, local store and gsplat
client against the loopback gsplat emulator: a hanging gsplat.org holds neither the predictor nor the
publishing of later items, the run ends within its drain deadline leaving the pending shares for
``share --missing``, and the file to share outlives the publish step that could delete it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from pipeline_utils import SlowPublishStore, TimedPredictor, make_photos

from e2e.e2e_utils import check_consistent
from emulators.faults import Fault
from emulators.gsplat import GsplatEmulator
from sharp_dataset_pipeline.observe.events import Metrics
from sharp_dataset_pipeline.pipeline.runner import Runner, RunOptions, RunSummary
from sharp_dataset_pipeline.pipeline.share_stage import ShareSettings
from sharp_dataset_pipeline.pipeline.stop import StopControl
from sharp_dataset_pipeline.publish.share import GsplatClient, LocalShareRecorder, ShareOptions
from sharp_dataset_pipeline.sources.folder import FolderSource
from sharp_dataset_pipeline.splat.formats import FormatOptions
from sharp_dataset_pipeline.splat.ply import read_ply
from sharp_dataset_pipeline.stores.local import LocalStore

ORDER = "order.createOrder"
HANG_S = 20.0  # longer than the whole run may take: the share endpoint "hangs"


def _run(tmp: Path, store: LocalStore, predictor: TimedPredictor, emu: GsplatEmulator, *, keep: int = 50,
         **opts: object) -> RunSummary:
    client = GsplatClient(ShareOptions(base=emu.base_url, allow_private_base=True, request_timeout_s=60.0,
                                       total_timeout_s=120.0))
    share = ShareSettings(client=client, use_small_ply=True, keep=keep, recorder=LocalShareRecorder(store, every=50))
    options = RunOptions.of(client_id="tester", run_dir=tmp / "run", subdir="folder", **opts)  # type: ignore[arg-type]
    return Runner(FolderSource(tmp / "photos", range_size=300), store, predictor, options, Metrics(),
                  StopControl(tmp / "control"), share=share).run()


def _ledger_share_ids(root: Path) -> dict[str, str]:
    with sqlite3.connect(root / ".coord" / "ledger.sqlite3") as db:
        return {i: json.loads(row)["gsplat_share_id"] for i, row in db.execute("SELECT id, row FROM items")}


def test_a_hanging_share_endpoint_holds_neither_the_predictor_nor_later_publishes(tmp_path: Path) -> None:
    make_photos(tmp_path / "photos", 10)
    store = SlowPublishStore(tmp_path / "store", delay_s=0.0)  # the real local store, publish times noted
    store.open()
    predictor = TimedPredictor(per_image_s=0.2)
    with GsplatEmulator() as emu:
        emu.faults.add(Fault(delay_s=HANG_S), path=ORDER, times=10)
        summary = _run(tmp_path, store, predictor, emu, batch_size=1, batch_wait_s=0.0, upload_workers=1,
                       stop_drain_secs=1.0)
        store.close()
    assert summary.published == 10
    # The predictor ran flat out: sharing inside post-processing held its 2 slots for HANG_S each
    # (a busy fraction under 0.1); here it only waits for fetches of tiny local photos.
    assert summary.predictor_busy_fraction >= 0.5, summary.predictor_busy_fraction
    # Every item was published right after its prediction, not one share delay later.
    last_prediction = predictor.finished_at[-1]
    last_publish = max(t for t, n in store.published_at if n)
    assert last_publish - last_prediction < 5.0, last_publish - last_prediction
    assert sum(n for _, n in store.published_at) == 10
    # The run ended within its drain deadline; the hung share and the queued ones are left for
    # `share --missing`: published without share fields, and the summary says so.
    assert summary.elapsed_s < HANG_S, summary.elapsed_s
    assert summary.shares == {"shared": 0, "failed": 0, "left_for_share_missing": 10}
    assert set(_ledger_share_ids(store.root).values()) == {""}
    rows = check_consistent(store.root)
    assert len(rows) == 10 and not any(r["gsplat_share_id"] for r in rows)


@pytest.mark.parametrize("formats", [("ply", "preview"), ("ply", "small.ply")])
def test_shares_after_publish_land_in_ledger_and_index_and_the_share_file_outlives_publish(
    tmp_path: Path, formats: tuple[str, ...]
) -> None:
    """Run files are deleted after publish (``keep_run_files=False``): the small PLY to share (made in
    post-processing, published or not) is kept until the share stage has uploaded it, then deleted."""
    make_photos(tmp_path / "photos", 5, seed=3)
    store = LocalStore(tmp_path / "store")
    store.open()
    with GsplatEmulator() as emu:
        emu.faults.add(Fault(delay_s=0.3), path=ORDER, times=5)  # slow, but within the drain deadline
        summary = _run(tmp_path, store, TimedPredictor(), emu, batch_size=2, batch_wait_s=0.0,
                       keep_run_files=False, formats=FormatOptions(formats=formats, small_ply_keep=50))
        uploaded = {sid: read_ply(emu.model_bytes(order["modelFileUrl"])).count for sid, order in emu.orders.items()}
        base = emu.base_url
    store.close()
    assert summary.published == 5
    assert summary.shares == {"shared": 5, "failed": 0, "left_for_share_missing": 0}
    ledger = _ledger_share_ids(store.root)
    assert len(ledger) == 5 and all(sid in uploaded for sid in ledger.values())
    rows = check_consistent(store.root)  # the index files were rewritten to show the late fields
    assert {r["id"]: r["gsplat_share_id"] for r in rows} == ledger
    assert all(r["gsplat_url"] == f"{base}/viewer/{r['gsplat_share_id']}" for r in rows)
    assert set(uploaded.values()) == {50}  # the small PLY was shared
    assert not list((tmp_path / "run" / "gaussians").iterdir()), "the shared files are deleted once shared"
