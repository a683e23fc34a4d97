"""Invariant 3: every lease acquisition is a compare-and-swap; expired leases can be taken over."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from sharp_dataset_pipeline.records import Batch, Unit
from sharp_dataset_pipeline.stores.local import LocalStore

UNITS = [f"list/oldest/{k * 300:06d}-{k * 300 + 299:06d}" for k in range(150)]


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _race(root: str, client: str, reverse: bool, barrier, results) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(Path(root))
    store.open()
    barrier.wait()
    order = list(reversed(UNITS)) if reverse else UNITS
    got: set[str] = set()
    for _ in range(3):  # several passes: each unit is contested again and again
        got.update(u for u in order if store.acquire(Unit(u, 0, 300), client, 3600.0) is not None)
    store.close()
    results.put((client, sorted(got)))


@pytest.mark.parametrize("second_reversed", [False, True])
def test_two_processes_never_hold_the_same_unit(tmp_path: Path, second_reversed: bool) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork")
    ctx = multiprocessing.get_context("fork")
    root = tmp_path / "repo"
    LocalStore(root).open()
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(root), name, rev, barrier, results))
             for name, rev in (("alpha", False), ("beta", second_reversed))]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert set(got["alpha"]).isdisjoint(got["beta"])
    assert sorted(got["alpha"] + got["beta"]) == sorted(UNITS)
    store = LocalStore(root)
    store.open()
    owners = {lease.unit: lease.owner for lease in store.leases()}
    assert owners == {**dict.fromkeys(got["alpha"], "alpha"), **dict.fromkeys(got["beta"], "beta")}


def _two_clients(tmp_path: Path) -> tuple[Clock, LocalStore, LocalStore]:
    clock = Clock()
    a, b = LocalStore(tmp_path / "repo", clock=clock), LocalStore(tmp_path / "repo", clock=clock)
    a.open()
    b.open()
    return clock, a, b


def test_takeover_only_after_expiry(tmp_path: Path) -> None:
    clock, a, b = _two_clients(tmp_path)
    unit = Unit(UNITS[0], 0, 300)
    first = a.acquire(unit, "a", 100.0)
    assert first is not None and first.expires_at == 1100.0
    clock.now = 1099.9
    assert b.acquire(unit, "b", 100.0) is None
    clock.now = 1100.0
    taken = b.acquire(unit, "b", 100.0)
    assert taken is not None and taken.owner == "b" and taken.nonce != first.nonce
    assert a.acquire(unit, "a", 100.0) is None
    assert a.unit_status([unit.key])[unit.key].lease == taken


def test_restarted_client_takes_its_own_lease_back_at_once(tmp_path: Path) -> None:
    clock, a, _ = _two_clients(tmp_path)
    unit = Unit(UNITS[1], 0, 300)
    first = a.acquire(unit, "host-1", 3600.0)
    a.close()
    restarted = LocalStore(tmp_path / "repo", clock=clock)
    restarted.open()
    clock.now += 5
    again = restarted.acquire(unit, "host-1", 3600.0)
    assert again is not None and first is not None
    assert again.nonce != first.nonce and again.expires_at == clock.now + 3600.0


def test_renew_and_release_touch_only_own_leases(tmp_path: Path) -> None:
    clock, a, b = _two_clients(tmp_path)
    ua, ub = Unit(UNITS[2], 0, 300), Unit(UNITS[3], 0, 300)
    a.acquire(ua, "a", 100.0)
    b.acquire(ub, "b", 100.0)
    clock.now += 50
    a.renew([ua.key, ub.key], "a", 100.0)
    a.release([ub.key], "a")
    status = a.unit_status([ua.key, ub.key])
    assert status[ua.key].lease is not None and status[ua.key].lease.expires_at == clock.now + 100.0
    assert status[ub.key].lease is not None and status[ub.key].lease.expires_at == 1100.0
    assert status[ub.key].lease.owner == "b"
    b.release([ub.key], "b")
    assert a.unit_status([ub.key])[ub.key].lease is None


def test_publish_renews_the_batch_leases(tmp_path: Path) -> None:
    clock, a, b = _two_clients(tmp_path)
    unit = Unit(UNITS[4], 0, 300)
    a.acquire(unit, "a", 100.0)
    clock.now = 1090.0
    a.publish(Batch(client_id="a", renew_units=[unit.key], lease_ttl_s=100.0))
    clock.now = 1150.0  # past the first expiry, within the renewed one
    assert b.acquire(unit, "b", 100.0) is None


def test_done_units_are_never_acquired(tmp_path: Path) -> None:
    clock, a, b = _two_clients(tmp_path)
    unit = Unit(UNITS[5], 0, 300)
    a.acquire(unit, "a", 100.0)
    a.publish(Batch(client_id="a", units_done=[unit.key]))
    clock.now += 10_000
    assert a.acquire(unit, "a", 100.0) is None
    assert b.acquire(unit, "b", 100.0) is None
    assert b.unit_status([unit.key])[unit.key].done
