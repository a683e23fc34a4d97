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
from sharp_dataset_pipeline.publish.share import GsplatClient, ShareOptions, StoreShareRecorder
from sharp_dataset_pipeline.sources.folder import FolderSource
from sharp_dataset_pipeline.splat.formats import FormatOptions
from sharp_dataset_pipeline.splat.ply import read_ply
from sharp_dataset_pipeline.stores.local import LocalStore

ORDER = "order.createOrder"
HANG_S = 20.0  # longer than the whole run may take: the share endpoint "hangs"


def _run(tmp: Path, store: LocalStore, predictor: TimedPredictor, emu: GsplatEmulator, *, keep: int = 50,
         every: int = 50, **opts: object) -> RunSummary:
    client = GsplatClient(ShareOptions(base=emu.base_url, allow_private_base=True, request_timeout_s=60.0,
                                       total_timeout_s=120.0))
    recorder = StoreShareRecorder(store.admin(), sync_every=every)
    share = ShareSettings(client=client, use_small_ply=True, keep=keep, recorder=recorder)
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
        # every=2: index files are rewritten during the run too, while later batches are published.
        summary = _run(tmp_path, store, TimedPredictor(), emu, every=2, batch_size=2, batch_wait_s=0.0,
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


NETWORK_MODULES = ("httpx", "httpcore", "requests", "urllib3", "aiohttp", "huggingface_hub", "socket", "ssl", "http",
                   "urllib.request")


def test_post_processing_reaches_no_network_client() -> None:
    """The stage functions run inside Ray workers too: ``pipeline/stages.py`` (post-processing) must not
    reach a network client, not even through one of our modules (sharing used to be done there)."""
    from test_architecture import _chain, _closure, _modules

    start = "sharp_dataset_pipeline.pipeline.stages"
    via = _closure(start, _modules())
    bad = [_chain(start, n, via) for n in sorted(via)
           if any(n == m or n.startswith(m + ".") for m in NETWORK_MODULES)]
    assert not bad, bad
    assert "sharp_dataset_pipeline.splat.formats" in via  # the walk does see what post-processing uses


def test_a_full_share_queue_never_makes_the_publisher_wait(tmp_path: Path) -> None:
    """``submit`` (called by the publisher) returns at once even with the one worker hung and the queue
    full; what does not fit and what the deadline cuts off are counted as left for ``share --missing``."""
    import time

    from sharp_dataset_pipeline.pipeline.share_stage import ShareStage
    from sharp_dataset_pipeline.records import IndexRow, ProcessedItem

    store = LocalStore(tmp_path / "store")
    store.open()
    files = []
    for i in range(4):
        files.append(tmp_path / f"item{i}.ply")
        files[-1].write_bytes(b"ply\n" + bytes(100))
    items = [ProcessedItem(row=IndexRow(id=f"item{i}", source="folder", unit="u"), files=[], share_file=f)
             for i, f in enumerate(files)]
    with GsplatEmulator() as emu:
        emu.faults.add(Fault(delay_s=HANG_S), times=4)  # the upload itself hangs
        client = GsplatClient(ShareOptions(base=emu.base_url, allow_private_base=True, request_timeout_s=60.0))
        recorder = StoreShareRecorder(store.admin())
        stage = ShareStage(ShareSettings(client=client, use_small_ply=False, keep=1, recorder=recorder,
                                         queue_max=1), Metrics(), delete_after=True)
        stage.start()
        stage.submit(items[:1])
        deadline = time.monotonic() + 5
        while stage.inbox.qsize() and time.monotonic() < deadline:  # the worker took item0 and hangs on it
            time.sleep(0.02)
        started = time.monotonic()
        stage.submit(items[1:])  # item1 fills the queue, item2 and item3 do not fit
        assert time.monotonic() - started < 0.5
        report = stage.finish(0.5)
    store.close()
    assert report.as_dict() == {"shared": 0, "failed": 0, "left_for_share_missing": 4}
    assert [f.exists() for f in files] == [True, False, False, False]  # item0 is still being uploaded
