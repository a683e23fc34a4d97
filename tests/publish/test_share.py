"""gsplat.org sharing against the loopback emulator: direct and chunked uploads, every fault, the
deadline, the base URL allow-list, no credentials sent, and ``share --missing`` on a real LocalStore."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest

from emulators.faults import Fault
from emulators.gsplat import GsplatEmulator, malformed_json, missing_share_id
from sharp_dataset_pipeline.errors import ConfigError, PermanentError, TransientError
from sharp_dataset_pipeline.publish import share as sh
from sharp_dataset_pipeline.publish.index import decode_rows
from sharp_dataset_pipeline.records import Batch, IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import read_ply, write_ply
from sharp_dataset_pipeline.stores.local import LocalStore
from sharp_dataset_pipeline.stores.local_share import update_local_share_fields

UPLOAD = "order.uploadGaussianSplat"
ORDER = "order.createOrder"


class FakeTime:
    """A clock that only moves when the client sleeps (backoff waits are recorded, never slept)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def gs():
    with GsplatEmulator() as emulator:
        yield emulator


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def _client(gs: GsplatEmulator, t: FakeTime, **kw) -> sh.GsplatClient:
    opts = sh.ShareOptions(base=gs.base_url, allow_private_base=True, **{"request_timeout_s": 5.0, **kw})
    return sh.GsplatClient(opts, clock=t.clock, sleep=t.sleep, rng=random.Random(1))


def _file(tmp: Path, size: int, name: str = "x.ply", seed: int = 0) -> Path:
    path = tmp / name
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


# -- the flow -----------------------------------------------------------------------------------


def test_a_small_file_goes_up_in_one_call_and_becomes_a_share(gs, fake_time, tmp_path):
    path = _file(tmp_path, 50_000)
    with _client(gs, fake_time) as client:
        result = client.share_file(path, title="item-1")
    assert gs.procedures() == [UPLOAD, ORDER]
    order = gs.orders[result.share_id]
    assert result.url == f"{gs.base_url}/viewer/{result.share_id}" and result.order_id == order["id"]
    assert gs.model_bytes(order["modelFileUrl"]) == path.read_bytes()
    assert result.model_id == order["modelFileUrl"].rsplit("/", 1)[-1]
    assert order["title"] == "item-1" and order["expirationType"] == "1week"
    assert sh.share_fields(result) == {"gsplat_url": result.url, "gsplat_share_id": result.share_id,
                                       "gsplat_model_id": result.model_id}


def test_a_large_file_goes_up_in_chunks(gs, fake_time, tmp_path):
    path = _file(tmp_path, 100_000, "big.spz")
    with _client(gs, fake_time, direct_max_bytes=64 * 1024, chunk_bytes=16 * 1024) as client:
        result = client.share_file(path, title="big")
    chunks = [c for c in gs.calls if c.procedure == "order.chunkedUploadChunk"]
    assert gs.procedures()[0] == "order.chunkedUploadInitiate" and gs.procedures()[-2:] == [
        "order.chunkedUploadFinalize", ORDER]
    assert [c.input["chunkIndex"] for c in chunks] == list(range(7))  # ceil(100000 / 16384)
    assert gs.model_bytes(gs.orders[result.share_id]["modelFileUrl"]) == path.read_bytes()


def test_the_plain_envelope_is_understood_too(tmp_path, fake_time):
    with GsplatEmulator(envelope="plain") as gs, _client(gs, fake_time) as client:
        result = client.share_file(_file(tmp_path, 1000), title="p")
        assert result.share_id in gs.orders


def test_only_ply_spz_and_splat_are_sent(gs, fake_time, tmp_path):
    with _client(gs, fake_time) as client, pytest.raises(PermanentError) as info:
        client.share_file(_file(tmp_path, 100, "x.sog"), title="x")
    assert info.value.reason == "gsplat_unsupported_type" and gs.calls == []


# -- faults -------------------------------------------------------------------------------------


def test_5xx_is_retried_with_backoff(gs, fake_time, tmp_path):
    gs.faults.status(503, times=2, path=ORDER)
    with _client(gs, fake_time) as client:
        result = client.share_file(_file(tmp_path, 1000), title="t")
    assert gs.procedures() == [UPLOAD, ORDER, ORDER, ORDER] and result.share_id in gs.orders
    assert len(fake_time.slept) == 2


def test_a_5xx_storm_gives_up_after_the_attempts(gs, fake_time, tmp_path):
    gs.faults.status(502, times=10, path=UPLOAD)
    with _client(gs, fake_time, attempts=3) as client, pytest.raises(TransientError) as info:
        client.share_file(_file(tmp_path, 1000), title="t")
    assert info.value.reason == "http_502" and gs.procedures() == [UPLOAD] * 3


def test_429_waits_for_retry_after(gs, fake_time, tmp_path):
    gs.faults.status(429, path=UPLOAD, Retry_After="7")
    with _client(gs, fake_time) as client:
        client.share_file(_file(tmp_path, 1000), title="t")
    assert fake_time.slept and fake_time.slept[0] >= 7


def test_a_slow_answer_times_out_and_is_retried(gs, fake_time, tmp_path):
    gs.faults.delay(5.0, path=UPLOAD)  # far beyond the timeout, which is far beyond a normal answer
    with _client(gs, fake_time, request_timeout_s=2.0) as client:
        result = client.share_file(_file(tmp_path, 1000), title="t")
    assert gs.procedures() == [UPLOAD, UPLOAD, ORDER] and result.share_id


def test_always_slow_ends_as_a_transient_timeout(gs, fake_time, tmp_path):
    gs.faults.delay(1.0, path=UPLOAD, times=2)
    with _client(gs, fake_time, request_timeout_s=0.2, attempts=2) as client, pytest.raises(TransientError) as info:
        client.share_file(_file(tmp_path, 1000), title="t")
    assert info.value.reason == "timeout"


def test_malformed_json_is_retried_then_reported(gs, fake_time, tmp_path):
    gs.faults.add(malformed_json(), path=ORDER)
    with _client(gs, fake_time) as client:
        assert client.share_file(_file(tmp_path, 1000), title="t").share_id
    gs.faults.add(malformed_json(), path=UPLOAD, times=4)
    with _client(gs, fake_time) as client, pytest.raises(TransientError) as info:
        client.share_file(_file(tmp_path, 1000), title="t")
    assert info.value.reason == "gsplat_bad_json"


def test_a_missing_share_id_is_retried_then_reported(gs, fake_time, tmp_path):
    gs.faults.add(missing_share_id(), path=ORDER)
    with _client(gs, fake_time) as client:
        assert client.share_file(_file(tmp_path, 1000), title="t").share_id
    gs.faults.add(missing_share_id(), path=ORDER, times=4)
    with _client(gs, fake_time) as client, pytest.raises(TransientError) as info:
        client.share_file(_file(tmp_path, 1000), title="t")
    assert info.value.reason == "gsplat_no_share_id"


def test_a_dropped_connection_is_retried(gs, fake_time, tmp_path):
    gs.faults.drop(path=UPLOAD)
    with _client(gs, fake_time) as client:
        assert client.share_file(_file(tmp_path, 1000), title="t").share_id
    assert gs.procedures() == [UPLOAD, UPLOAD, ORDER]


def test_a_4xx_is_permanent_and_not_retried(gs, fake_time, tmp_path):
    body = json.dumps([{"error": {"json": {"message": "file too large", "code": -32600,
                                            "data": {"code": "PAYLOAD_TOO_LARGE", "httpStatus": 413}}}}]).encode()
    gs.faults.add(Fault(status=413, body=body), path=UPLOAD)
    with _client(gs, fake_time) as client, pytest.raises(PermanentError, match="file too large") as info:
        client.share_file(_file(tmp_path, 1000), title="t")
    assert info.value.reason == "http_413" and gs.procedures() == [UPLOAD]


def test_a_trpc_error_inside_a_200_is_mapped_by_its_status(gs, fake_time, tmp_path):
    def err(status: int) -> Fault:
        entry = {"error": {"json": {"message": "boom", "data": {"httpStatus": status}}}}
        return Fault(status=200, body=json.dumps([entry]).encode())

    gs.faults.add(err(503), path=ORDER)
    with _client(gs, fake_time) as client:
        assert client.share_file(_file(tmp_path, 1000), title="t").share_id
    gs.faults.add(err(400), path=ORDER)
    with _client(gs, fake_time) as client, pytest.raises(PermanentError, match="boom"):
        client.share_file(_file(tmp_path, 1000), title="t")


def test_redirects_are_not_followed(gs, fake_time, tmp_path):
    # The target is the emulator itself: a followed redirect would show up as a second call.
    gs.faults.add(Fault(status=307, headers={"Location": f"{gs.base_url}/share/trpc/{ORDER}?batch=1"}), path=UPLOAD)
    with _client(gs, fake_time) as client, pytest.raises(PermanentError) as info:
        client.share_file(_file(tmp_path, 1000), title="t")
    assert info.value.reason == "gsplat_redirect" and gs.procedures() == [UPLOAD]


def test_the_whole_share_has_one_deadline(gs, fake_time, tmp_path):
    gs.faults.status(503, times=50)
    with _client(gs, fake_time, attempts=50, backoff_base_s=4.0, total_timeout_s=60.0) as client:
        with pytest.raises(TransientError) as info:
            client.share_file(_file(tmp_path, 1000), title="t")
    assert info.value.reason == "gsplat_deadline"
    assert sum(fake_time.slept) < 60.0 and len(gs.calls) < 50


def test_no_credentials_are_sent(gs, fake_time, tmp_path, monkeypatch):
    token = "hf_" + "A1b2C3d4E5f6G7h8I9j0K1l2"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("UNSPLASH_ACCESS_KEY", "unsplash-secret-key-123")
    with _client(gs, fake_time, direct_max_bytes=500, chunk_bytes=400) as client:
        client.share_file(_file(tmp_path, 1000), title="t")
    assert len(gs.calls) == 6  # initiate, 3 chunks, finalize, createOrder
    for call in gs.calls:
        names = {k.lower() for k in call.headers}
        assert not names & {"authorization", "cookie", "x-api-key"}
        blob = json.dumps(call.headers) + json.dumps(call.input)
        assert token not in blob and "unsplash-secret-key-123" not in blob


def test_try_share_logs_and_returns_none(gs, fake_time, tmp_path, caplog):
    gs.faults.status(500, times=10)
    with _client(gs, fake_time, attempts=2) as client, caplog.at_level(logging.WARNING):
        assert sh.try_share(client, _file(tmp_path, 1000), title="item-9") is None
    assert "item-9" in caplog.text and "http_500" in caplog.text


# -- the base URL -------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["https://gsplat.org", "https://gsplat.org/", "https://eu.gsplat.org",
                                  "https://gsplat.org:443/app"])
def test_allowed_bases(base):
    assert sh.check_base(base) == base.rstrip("/")


@pytest.mark.parametrize("base", [
    "http://gsplat.org", "https://evil.example", "https://gsplat.org.evil.example", "https://notgsplat.org",
    "https://127.0.0.1", "https://10.1.2.3", "https://[::1]", "https://169.254.169.254", "https://localhost",
    "https://user:pw@gsplat.org", "https://gsplat.org/?x=1", "ftp://gsplat.org", "gsplat.org", "",
])
def test_refused_bases(base):
    with pytest.raises(ConfigError):
        sh.check_base(base)


def test_loopback_needs_the_explicit_test_flag():
    assert sh.check_base("http://127.0.0.1:8123", allow_private=True) == "http://127.0.0.1:8123"
    with pytest.raises(ConfigError):
        sh.GsplatClient(sh.ShareOptions(base="http://127.0.0.1:8123"))


# -- share --missing on a local store -----------------------------------------------------------


def _item(work: Path, item_id: str, **fields: str) -> ProcessedItem:
    rng = np.random.default_rng(sum(map(ord, item_id)))
    g = Gaussians(vertices=rng.standard_normal((300, 14)).astype(np.float32), focal_px=400.0, width=64, height=48)
    work.mkdir(parents=True, exist_ok=True)
    ply = work / f"{item_id}.ply"
    size, digest = write_ply(g, ply)
    row = IndexRow(id=item_id, source="folder", unit="folder/x/00000-00299", ply_path=f"photos/{item_id}/{item_id}.ply",
                   ply_size=size, ply_sha256=digest, num_gaussians=g.count, **fields)
    return ProcessedItem(row, [PublishedFile("ply", row.ply_path, ply, size, digest)])


def _index_rows(root: Path) -> list[IndexRow]:
    rows: list[IndexRow] = []
    for path in sorted((root / "data").glob("train*.jsonl")):
        rows += decode_rows(path.read_bytes())
    return rows


def test_share_missing_fills_in_what_failed_and_the_index_files_agree(gs, fake_time, tmp_path):
    root = tmp_path / "store"
    store = LocalStore(root)
    store.open()
    try:
        done = dict(gsplat_url="https://gsplat.org/viewer/old", gsplat_share_id="old", gsplat_model_id="m.ply")
        store.publish(Batch("c1", items=[_item(tmp_path / "w", "a"), _item(tmp_path / "w", "b", **done)]))
        store.compact()  # a and b now live in the compacted index file
        store.publish(Batch("c1", items=[_item(tmp_path / "w", "c")]))  # c in a shard not yet compacted
        pick = sh.local_share_file(root, use_small_ply=True, keep=50, work_dir=tmp_path / "small")
        record = lambda item_id, fields: update_local_share_fields(store, item_id, fields)  # noqa: E731

        gs.faults.status(500, times=2, path=UPLOAD)  # the first share (a) fails: its publish stays as it is
        with _client(gs, fake_time, attempts=2) as client:
            first = sh.share_missing(store, client, file_for=pick, record=record)
        assert first.shared == ["c"] and first.failed == {"a": "http_500"} and first.already == 1
        by_id = {r.id: r for r in store.rows()}
        assert by_id["a"].gsplat_share_id == "" and by_id["c"].gsplat_share_id in gs.orders
        in_files = {r.id: r.gsplat_share_id for r in _index_rows(root)}  # c's shard file was rewritten
        assert in_files == {"a": "", "b": "old", "c": by_id["c"].gsplat_share_id}

        with _client(gs, fake_time) as client:
            second = sh.share_missing(store, client, file_for=pick, record=record)
        assert second.shared == ["a"] and second.failed == {} and second.already == 2
    finally:
        store.close()

    rows = _index_rows(root)
    assert sorted(r.id for r in rows) == ["a", "b", "c"]  # every id once across index and shards
    shared = {r.id: r for r in rows}
    assert shared["b"].gsplat_share_id == "old"
    for item_id in ("a", "c"):
        r = shared[item_id]
        assert r.gsplat_share_id in gs.orders and r.gsplat_url.endswith(f"/viewer/{r.gsplat_share_id}")
        uploaded = gs.model_bytes(gs.orders[r.gsplat_share_id]["modelFileUrl"])
        assert read_ply(uploaded).count == 50  # the small PLY was shared, made from the stored PLY

    reopened = LocalStore(root)
    reopened.open()  # crash repair must find the files consistent with the ledger
    try:
        assert {r.id: r.gsplat_share_id for r in reopened.rows()} == {k: v.gsplat_share_id for k, v in shared.items()}
        assert sorted(r.id for r in _index_rows(root)) == ["a", "b", "c"]
    finally:
        reopened.close()


def test_update_refuses_other_fields_and_unknown_ids(tmp_path):
    store = LocalStore(tmp_path / "s")
    store.open()
    try:
        store.publish(Batch("c1", items=[_item(tmp_path / "w", "a")]))
        with pytest.raises(ValueError):
            update_local_share_fields(store, "a", {"ply_path": "x"})
        assert update_local_share_fields(store, "zz", {"gsplat_share_id": "s"}) is False
    finally:
        store.close()


def test_share_missing_reports_a_missing_file(gs, fake_time, tmp_path):
    store = LocalStore(tmp_path / "s")
    store.open()
    try:
        store.publish(Batch("c1", items=[_item(tmp_path / "w", "a")]))
        (tmp_path / "s" / "photos" / "a" / "a.ply").unlink()
        pick = sh.local_share_file(tmp_path / "s", use_small_ply=False, keep=10, work_dir=tmp_path / "small")
        with _client(gs, fake_time) as client:
            summary = sh.share_missing(store, client, file_for=pick, record=lambda i, f: None)
        assert summary.failed == {"a": "gsplat_no_file"} and gs.calls == []
    finally:
        store.close()
