"""HubStore against the loopback Hub, driven through the real ``huggingface_hub`` client.

The store and the emulator share a ``ManualClock``: lease expiry, the commit governor, Retry-After
waits and the emulator's quota window all run on it, so waits cost no real time and are checked
exactly.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulators.hub import HubEmulator, HubFaults, ManualClock, index_rows, make_items
from sharp_dataset_pipeline.errors import CommitQuotaSpent, StoreError
from sharp_dataset_pipeline.records import Batch, Failure, Followup, Unit
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore

REPO = "tester/splats"
TTL = 600.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hub(clock: ManualClock) -> Iterator[HubEmulator]:
    with HubEmulator(clock=clock) as emulator:
        yield emulator


@pytest.fixture
def make_store(hub: HubEmulator, clock: ManualClock, tmp_path: Path) -> Iterator[Callable[..., HubStore]]:
    stores: list[HubStore] = []

    def build(client_id: str = "c1", **kw) -> HubStore:
        kw.setdefault("state_max_age_s", 0.0)
        store = HubStore(HubOptions(REPO, endpoint=hub.url, token="hf_testtokenforthestore", client_id=client_id,
                                    layout="files",
                                    cache_dir=tmp_path / f"cache-{client_id}-{len(stores)}", retry_base_s=0.5, **kw),
                         clock=clock, sleep=clock.sleep)
        store.open()
        stores.append(store)
        return store

    yield build


def _rows(hub: HubEmulator) -> list[dict]:
    return index_rows(hub.files(REPO))


def _assert_exactly_once(hub: HubEmulator, expected: set[str]) -> None:
    files = hub.files(REPO)
    rows = index_rows(files)
    counts = Counter(r["id"] for r in rows)
    assert set(counts) == expected
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1]
    for row in rows:
        assert row["image_path"] in files and row["ply_path"] in files


def test_open_creates_a_private_repo_with_a_card(make_store, hub: HubEmulator) -> None:
    make_store()
    repo = hub.repo(REPO)
    assert repo.private is True
    card = hub.files(REPO)["README.md"].decode()
    assert "configs:" in card and "data/train*.jsonl" in card
    commits = len(hub.history(REPO))
    make_store("c2")  # a second client finds the card and writes nothing
    assert len(hub.history(REPO)) == commits


def test_model_repos_and_public_repos_work(hub: HubEmulator, clock: ManualClock, tmp_path: Path) -> None:
    store = HubStore(HubOptions(REPO, repo_type="model", private=False, endpoint=hub.url, token="hf_x", client_id="m",
                                layout="files",
                                cache_dir=tmp_path / "m"), clock=clock, sleep=clock.sleep)
    store.open()
    assert store.acquire(Unit("u", 0, 2), "m", TTL) is not None
    receipt = store.publish(Batch("m", items=make_items(tmp_path, ["a", "b"], unit="u")))
    assert receipt.published_ids == ["a", "b"]
    assert hub.repo(REPO, "model").private is False
    assert {r["id"] for r in index_rows(hub.files(REPO, "model"))} == {"a", "b"}


def test_one_commit_per_batch_and_the_ledger_reads_back(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    store = make_store()
    assert store.acquire(Unit("u1", 0, 4), "c1", TTL) is not None
    before = len(hub.history(REPO))
    batch = Batch("c1", items=make_items(tmp_path, ["a", "b", "c"], unit="u1"), renew_units=["u1"], lease_ttl_s=TTL,
                  failures=[Failure("d", "u1", "fetch", "http_404", "gone", False)],
                  followups=[Followup("track", "a", "dl-a")])
    receipt = store.publish(batch)
    assert receipt.published_ids == ["a", "b", "c"] and receipt.commit == hub.repo(REPO).head
    assert len(hub.history(REPO)) == before + 1
    reader = make_store("c2")
    states = reader.item_states(["a", "d", "zz"])
    assert states["a"].published and states["d"].failed_permanently and "zz" not in states
    assert reader.pending_followups("track") == [Followup("track", "a", "dl-a")]
    store.complete_followups([Followup("track", "a", "dl-a")])
    store.publish(Batch("c1", units_done=["u1"]))
    assert reader.pending_followups("track") == []
    status = reader.unit_status(["u1"])["u1"]
    assert status.done and status.lease is None
    _assert_exactly_once(hub, {"a", "b", "c"})


def test_leases_cas_takeover_and_own_lease_back(make_store, clock: ManualClock) -> None:
    a, b = make_store("a"), make_store("b")
    unit = Unit("list/000-099", 0, 100)
    assert a.acquire(unit, "a", TTL) is not None
    assert b.acquire(unit, "b", TTL) is None
    restarted = make_store("a")  # same client id: its lease comes back at once
    assert restarted.acquire(unit, "a", TTL) is not None
    clock.advance(TTL + 1)
    taken = b.acquire(unit, "b", TTL)
    assert taken is not None and taken.owner == "b"
    assert a.acquire(unit, "a", TTL) is None
    b.release([unit.key], "b")
    assert a.unit_status([unit.key])[unit.key].lease is None


# Each racing process has its own manual clock, which its 409 back-off sleeps move forward at once:
# under a long 409 storm one process's clock could pass an ordinary TTL and (rightly, by its clock)
# take the others' leases over. This test is about exclusivity while leases are valid, so they
# must stay valid for the whole race.
RACE_TTL = 1e9


def _race(url: str, units: list[str], client: str, start: float, out: multiprocessing.Queue) -> None:
    clock = ManualClock(start)

    def back_off(seconds: float) -> None:
        # The manual clock moves at once, but the others' held commits end in real time: a back-off
        # that took no real time let one process spend its 30 tries on a single held commit (seen on
        # a loaded CI machine), which is no back-off at all.
        clock.sleep(seconds)
        time.sleep(min(seconds, 0.05))

    store = HubStore(HubOptions(REPO, endpoint=url, token="hf_proc", client_id=client, retry_base_s=0.05,
                                layout="files"),
                     clock=clock, sleep=back_off)
    store.open()
    won = [key for key in units if store.acquire(Unit(key, 0, 10), client, RACE_TTL) is not None]
    out.put((client, won))


def test_lease_cas_among_processes(hub: HubEmulator, clock: ManualClock, make_store) -> None:
    make_store("setup")
    hub.set_faults(HubFaults(overlap_409=True, commit_hold_s=0.02))
    units = [f"u/{i:02d}" for i in range(6)]
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(hub.url, units[::1 if i % 2 else -1], f"p{i}", clock(), out))
             for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    owners: dict[str, list[str]] = {}
    for client, won in results:
        for key in won:
            owners.setdefault(key, []).append(client)
    assert sorted(owners) == units
    assert all(len(v) == 1 for v in owners.values()), owners
    files = hub.files(REPO)
    for key, (client,) in owners.items():
        lease = next(json.loads(v) for p, v in files.items() if p.startswith(".coord/leases/")
                     and json.loads(v)["unit"] == key)
        assert lease["owner"] == client


@pytest.mark.parametrize("script", [[409, 409], [412], ["500-after"], ["drop-after"], [503], [429]])
def test_each_fault_publishes_exactly_once(make_store, hub: HubEmulator, clock: ManualClock,
                                           tmp_path: Path, script: list) -> None:
    store = make_store()
    hub.set_faults(HubFaults(script=list(script)))
    receipt = store.publish(Batch("c1", items=make_items(tmp_path, ["a", "b"])))
    assert receipt.published_ids == ["a", "b"]
    assert receipt.commit == hub.repo(REPO).head
    receipt = store.publish(Batch("c1", items=make_items(tmp_path, ["b", "c"])))
    assert receipt.published_ids == ["c"]
    _assert_exactly_once(hub, {"a", "b", "c"})


def test_unknown_outcome_with_a_lagging_head_is_not_resent(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    store = make_store()
    hub.set_faults(HubFaults(script=["500-after"], lag_reads=3))
    receipt = store.publish(Batch("c1", items=make_items(tmp_path, ["a", "b"])))
    assert receipt.published_ids == ["a", "b"]
    assert hub.stats["lagged_head_reads"] >= 1
    _assert_exactly_once(hub, {"a", "b"})
    assert store.budget_report()["commits_landed"] >= 1


def test_a_commit_that_did_not_land_is_not_reported(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    store = make_store()
    hub.set_faults(HubFaults(script=[403]))
    store.record_failures([Failure("z", "u", "fetch", "boom", "", True)], "c1")
    with pytest.raises(StoreError) as err:
        store.publish(Batch("c1", items=make_items(tmp_path, ["a"])))
    assert "403" in str(err.value)
    assert _rows(hub) == []
    # A recorded failure is kept for the next commit, not lost with the refused one.
    store.publish(Batch("c1", items=make_items(tmp_path, ["a"])))
    assert make_store("r").item_states(["z"])["z"].transient_failures == 1


def test_two_clients_publishing_the_same_items_never_duplicate(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    a, b = make_store("a"), make_store("b")
    ids = [f"i{n:02d}" for n in range(12)]
    published = []
    for n in range(0, 12, 3):
        published += a.publish(Batch("a", items=make_items(tmp_path / "a", ids[n:n + 4]))).published_ids
        published += b.publish(Batch("b", items=make_items(tmp_path / "b", ids[n:n + 5]))).published_ids
    assert sorted(published) == ids
    assert a.budget_report()["commit_conflicts_412"] + b.budget_report()["commit_conflicts_412"] >= 1
    _assert_exactly_once(hub, set(ids))


def test_quota_storm_waits_as_told_and_loses_nothing(make_store, hub: HubEmulator, clock: ManualClock,
                                                      tmp_path: Path) -> None:
    store = make_store()
    hub.set_faults(HubFaults(quota_commits=3, quota_window_s=1800))
    ids = [f"q{n:02d}" for n in range(20)]
    for n in range(0, 20, 2):
        store.publish(Batch("c1", items=make_items(tmp_path, ids[n:n + 2])))
    _assert_exactly_once(hub, set(ids))
    refused = hub.stats["commit_429"]
    # Every refusal was followed by a wait of at least what the server asked for: at most one 429
    # per quota window crossed, never a burst of retries.
    assert 1 <= refused <= 4
    assert max(clock.slept) >= 1700
    assert hub.stats["commit_requests"] == hub.stats["commits"] + refused


def test_the_governor_keeps_the_client_under_its_hourly_budget(make_store, hub: HubEmulator,
                                                                clock: ManualClock, tmp_path: Path) -> None:
    store = make_store(commits_per_hour=5)
    for n in range(12):
        store.publish(Batch("c1", items=make_items(tmp_path, [f"g{n:02d}"])))
        clock.advance(1.0)
    times = [c.at for c in hub.history(REPO)]
    for i, t in enumerate(times):
        assert len([s for s in times[i:] if s - t < 3600.0]) <= 5 + 1  # +1: the card, before the budget
    assert hub.stats["commit_429"] == 0
    assert store.budget_report()["commits_last_hour"] <= 5


def test_compaction_folds_shards_into_the_index(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    store = make_store(auto_compact_shards=0)
    for n in range(4):
        store.publish(Batch("c1", items=make_items(tmp_path, [f"k{n}a", f"k{n}b"]),
                            failures=[Failure(f"x{n}", "u", "fetch", "timeout", "", True)]))
    assert store.compact() == 8
    files = hub.files(REPO)
    # the compacted index and its typed twin (``hub_files_index``)
    assert sorted(p for p in files if p.startswith("data/")) == ["data/index/files/train.parquet", "data/train.jsonl"]
    assert not [p for p in files if p.startswith(".coord/batches/")]
    _assert_exactly_once(hub, {f"k{n}{s}" for n in range(4) for s in "ab"})
    fresh = make_store("c9")
    assert fresh.item_states(["k0a"])["k0a"].published
    assert fresh.item_states(["x1"])["x1"].transient_failures == 1
    store.publish(Batch("c1", items=make_items(tmp_path, ["k0a", "late"])))
    _assert_exactly_once(hub, {f"k{n}{s}" for n in range(4) for s in "ab"} | {"late"})


def test_automatic_compaction_keeps_the_shard_count_bounded(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    store = make_store(auto_compact_shards=4)
    for n in range(10):
        store.publish(Batch("c1", items=make_items(tmp_path, [f"s{n}"])))
    shards = [p for p in hub.files(REPO) if p.startswith("data/train-shard-")]
    assert len(shards) < 6
    _assert_exactly_once(hub, {f"s{n}" for n in range(10)})


def test_full_folders_fan_out_and_the_index_follows(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    store = make_store(fanout_threshold=3)
    store.publish(Batch("c1", items=make_items(tmp_path, ["aa1", "ab2", "ac3"])))
    store.publish(Batch("c1", items=make_items(tmp_path, ["zz4"])))
    files = hub.files(REPO)
    assert "photos/zz/zz4/zz4.ply" in files and "photos/zz4/zz4.ply" not in files
    _assert_exactly_once(hub, {"aa1", "ab2", "ac3", "zz4"})


def test_dataset_loads_from_a_snapshot(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    store = make_store()
    store.publish(Batch("c1", items=make_items(tmp_path / "i", ["a", "b"])))
    store.publish(Batch("c1", items=make_items(tmp_path / "i", ["c"])))
    snapshot = tmp_path / "snapshot"
    for path, data in hub.files(REPO).items():
        (snapshot / path).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / path).write_bytes(data)
    ds = datasets.load_dataset(str(snapshot), split="train", cache_dir=str(tmp_path / "hf-ds"))
    assert sorted(ds["id"]) == ["a", "b", "c"]
    assert ds.features["image_size"].dtype == "int64"


def test_close_commits_what_is_still_buffered(make_store, hub: HubEmulator, clock: ManualClock) -> None:
    store = make_store()
    store.record_failures([Failure("late", "u", "predict", "oom", "", True)], "c1")
    store.complete_followups([Followup("track", "x", "")])
    commits = len(hub.history(REPO))
    store.close()
    assert len(hub.history(REPO)) == commits + 1
    reader = make_store("r")
    assert reader.item_states(["late"])["late"].transient_failures == 1


def test_renew_extends_own_leases_and_reports_lost_ones(make_store, clock: ManualClock) -> None:
    a, b = make_store("a"), make_store("b")
    assert a.acquire(Unit("u1", 0, 1), "a", 100.0) is not None
    assert a.acquire(Unit("u2", 0, 1), "a", 100.0) is not None
    clock.advance(101.0)
    assert b.acquire(Unit("u2", 0, 1), "b", 100.0) is not None  # u2 expired: taken over
    a.renew(["u1", "u2"], "a", 100.0)
    status = b.unit_status(["u1", "u2"])
    assert status["u1"].lease.owner == "a" and status["u1"].lease.expires_at == clock() + 100.0
    assert status["u2"].lease.owner == "b"
    assert a.budget_report()["leases_lost"] == 1
    a.release(["u1", "u2"], "a")
    status = b.unit_status(["u1", "u2"])
    assert status["u1"].lease is None and status["u2"].lease.owner == "b"


def test_an_unreachable_hub_is_a_store_error_and_nothing_is_reported(make_store, hub: HubEmulator,
                                                                      tmp_path: Path) -> None:
    store = make_store()
    hub.set_faults(HubFaults(down=True))
    with pytest.raises(StoreError, match="unreachable"):
        store.publish(Batch("c1", items=make_items(tmp_path, ["a"])))
    with pytest.raises(StoreError):
        store.item_states(["a"])


def test_a_repo_nearing_the_file_limit_is_reported(make_store, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    store = make_store(warn_files=10)
    with caplog.at_level("WARNING", logger="sharp_dataset_pipeline.stores.hub_sync"):
        store.publish(Batch("c1", items=make_items(tmp_path, [f"w{n}" for n in range(5)])))
    assert any("100k" in r.getMessage() for r in caplog.records)


def test_one_bad_item_fails_alone_and_the_rest_is_one_commit(make_store, hub: HubEmulator, tmp_path: Path) -> None:
    """Invariant 8 at publish time: a file changed after validation, a missing file and a repeated id
    each fail their item alone (recorded in the same commit); the rest of the batch is published."""
    store = make_store()
    assert store.acquire(Unit("u1", 0, 9), "c1", TTL) is not None
    assert store.acquire(Unit("u2", 0, 9), "c1", TTL) is not None
    items = make_items(tmp_path / "a", ["a", "b", "c"], unit="u1") + make_items(tmp_path / "d", ["d"], unit="u2")
    items[1].files[1].local_path.write_bytes(b"changed after validation")
    items[2].files[0].local_path.unlink()
    twin = make_items(tmp_path / "twin", ["a"], unit="u1")[0]  # same id, other bytes
    twin.files[0].local_path.write_bytes(b"another photo with the same id")
    twin.files[0] = type(twin.files[0])("image", twin.files[0].repo_path, twin.files[0].local_path, 30,
                                        hashlib.sha256(b"another photo with the same id").hexdigest())
    before = len(hub.history(REPO))
    receipt = store.publish(Batch("c1", items=[*items, twin], units_done=["u1", "u2"], lease_ttl_s=TTL))
    assert len(hub.history(REPO)) == before + 1
    assert sorted(receipt.published_ids) == ["a", "d"]
    assert sorted((f.item_id, f.reason) for f in receipt.failed) == [
        ("a", "duplicate_id"), ("b", "file_changed"), ("c", "file_changed")]
    assert receipt.units_held == ["u1"]  # b and c may be retried: u1 is not done, u2 is
    _assert_exactly_once(hub, {"a", "d"})
    assert hub.files(REPO)["photos/a/a.jpg"] == items[0].files[0].local_path.read_bytes()
    reader = make_store("c2")
    states = reader.item_states(["b", "c"])
    assert states["b"].transient_failures == 1 and states["c"].transient_failures == 1
    status = reader.unit_status(["u1", "u2"])
    assert status["u2"].done and not status["u1"].done and status["u1"].lease is not None


def test_redo_model_changed_replaces_rows_and_files_in_one_commit(make_store, hub: HubEmulator,
                                                                  tmp_path: Path) -> None:
    store = make_store()
    planar = make_items(tmp_path / "p", ["a", "b"])
    for pi in planar:
        pi.row.predictor, pi.row.model_version = "planar", "planar-1"
    store.publish(Batch("c1", items=planar))
    store.compact()
    sharp = make_items(tmp_path / "s", ["a", "c"])
    for pi in sharp:
        pi.row.predictor, pi.row.model_version = "sharp", "sharp-2"
        pi.files[1].local_path.write_bytes(b"sharp splat " + pi.row.id.encode())
        pi.files[1] = type(pi.files[1])("ply", pi.files[1].repo_path, pi.files[1].local_path,
                                        len(pi.files[1].local_path.read_bytes()),
                                        hashlib.sha256(pi.files[1].local_path.read_bytes()).hexdigest())
        pi.row.ply_size, pi.row.ply_sha256 = pi.files[1].size, pi.files[1].sha256
    assert store.publish(Batch("c1", items=sharp[:1])).published_ids == []  # no --redo: planar stays
    before = len(hub.history(REPO))
    receipt = store.publish(Batch("c1", items=sharp, redo="model-changed"))
    assert len(hub.history(REPO)) == before + 1
    assert sorted(receipt.published_ids) == ["a", "c"] and receipt.replaced_ids == ["a"]
    _assert_exactly_once(hub, {"a", "b", "c"})
    rows = {r["id"]: r for r in _rows(hub)}
    assert rows["a"]["predictor"] == "sharp" and rows["b"]["predictor"] == "planar"
    assert hub.files(REPO)["photos/a/a.ply"] == b"sharp splat a"
    reader = make_store("c2")
    assert reader.item_states(["a"])["a"].model_version == "sharp-2"


def test_a_stopping_run_does_not_wait_for_the_commit_quota(hub: HubEmulator, clock: ManualClock,
                                                           tmp_path: Path) -> None:
    stop = threading.Event()
    store = HubStore(HubOptions(REPO, endpoint=hub.url, token="hf_testtokenforthestore", client_id="c1",
                                layout="files", cache_dir=tmp_path / "cache", state_max_age_s=0.0),
                     clock=clock, sleep=clock.sleep, stop=stop)
    store.open()
    store.publish(Batch("c1", items=make_items(tmp_path, ["a"])))
    # The quota is spent: the Hub says "in about 1 hour", with no Retry-After header.
    hub.set_faults(HubFaults(quota_commits=1, quota_window_s=3600.0, quota_retry_after=False))
    stop.set()
    with pytest.raises(CommitQuotaSpent) as raised:
        store.publish(Batch("c1", items=make_items(tmp_path, ["b"])))
    assert raised.value.retry_after_s == pytest.approx(3600.0, abs=5.0)
    assert max(clock.slept, default=0.0) <= 15.0  # it did not wait the hour
    assert {r["id"] for r in _rows(hub)} == {"a"}
    # Not stopping, the same publish waits the hour (fake clock) and lands once.
    stop.clear()
    hub.set_faults(HubFaults(quota_commits=1, quota_window_s=3600.0, quota_retry_after=False))
    assert store.publish(Batch("c1", items=make_items(tmp_path, ["b"]))).published_ids == ["b"]
    assert max(clock.slept) >= 3590.0
    _assert_exactly_once(hub, {"a", "b"})
