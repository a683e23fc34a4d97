"""``status``, ``verify``, ``remove`` and ``gc`` on a store that implements only the two protocols of
``stores/base.py`` (``tests/stores/memory_store.py``): adding a store touches nothing in ``ops/``."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import pytest

from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.ops.gc import gc
from sharp_dataset_pipeline.ops.remove import remove
from sharp_dataset_pipeline.ops.status import dataset_status, publish_events
from sharp_dataset_pipeline.ops.verify import verify
from sharp_dataset_pipeline.records import Batch, Failure, IndexRow, ProcessedItem, PublishedFile, Unit
from sharp_dataset_pipeline.stores.base import Store, StoreAdmin
from sharp_dataset_pipeline.stores.hub import HubStore
from sharp_dataset_pipeline.stores.hub_admin import HubAdmin
from sharp_dataset_pipeline.stores.local import LocalStore
from sharp_dataset_pipeline.stores.local_admin import LocalAdmin
from stores.memory_store import MemoryAdmin, MemoryStore

NOW = 2_000_000_000.0


def _item(work: Path, item_id: str, unit: str) -> ProcessedItem:
    row = IndexRow(id=item_id, source="folder", unit=unit, width=64, height=48, focal_px=55.5)
    files = []
    for kind, ext in (("image", "jpg"), ("ply", "ply")):
        data = hashlib.sha256(f"{item_id}{kind}".encode()).digest() * 4
        local = work / f"{item_id}.{ext}"
        local.write_bytes(data)
        repo = f"photos/{item_id}/{item_id}.{ext}"
        digest = hashlib.sha256(data).hexdigest()
        files.append(PublishedFile(kind, repo, local, len(data), digest))
        setattr(row, f"{kind}_path", repo)
        setattr(row, f"{kind}_size", len(data))
        setattr(row, f"{kind}_sha256", digest)
    return ProcessedItem(row, files)


@pytest.fixture
def mem(tmp_path: Path) -> tuple[Store, MemoryAdmin]:
    """Two publish steps by two clients (3 items, one failure, one unit done) and two leases."""
    clock = iter(range(int(NOW) - 100, int(NOW) + 10_000)).__next__
    store = MemoryStore(tmp_path / "scratch", clock=lambda: float(clock()))
    admin = store.admin()
    store.publish(Batch(client_id="alpha", items=[_item(tmp_path, i, "u/0-9") for i in ("a", "b")],
                        units_done=["u/0-9"]))
    store.publish(Batch(client_id="beta", items=[_item(tmp_path, "c", "u/10-19")],
                        failures=[Failure("d", "u/10-19", "fetch", "http_404", "gone", transient=False)]))
    assert store.acquire(Unit("u/10-19", 10, 20), "beta", ttl_s=10.0) is not None  # expires long before NOW
    assert store.acquire(Unit("u/20-29", 20, 30), "alpha", ttl_s=1e9) is not None  # still valid at NOW
    return store, admin


def test_the_memory_store_is_a_store_with_an_admin(mem: tuple[Store, MemoryAdmin]) -> None:
    store: Store = mem[0]  # typed: the two protocols are all it implements
    admin: StoreAdmin = store.admin()
    assert admin is mem[1] and admin.description == "memory:"


def test_status_on_the_memory_store(mem: tuple[Store, MemoryAdmin]) -> None:
    _, admin = mem
    report = dataset_status(admin, NOW)
    assert (report.store, report.published, report.failed, report.units_done) == ("memory:", 3, {"http_404": 1}, 1)
    assert {c.client: c.published for c in report.clients} == {"alpha": 2, "beta": 1}
    assert sorted(le.unit for le in report.leases) == ["u/10-19", "u/20-29"]
    assert [(e.client, e.items) for e in publish_events(admin)] == [("alpha", 2), ("beta", 1)]


def test_verify_and_fix_on_the_memory_store(mem: tuple[Store, MemoryAdmin]) -> None:
    _, admin = mem
    assert verify(admin, lambda: NOW, deep=True).ok is False  # the expired lease
    admin.books.files["photos/zz/stray.ply"] = b"stray"
    admin.books.files["photos/a/a.ply"] = b"altered"
    report = verify(admin, lambda: NOW, deep=True)
    assert sorted((p.kind, p.target) for p in report.problems) == [
        ("expired_lease", "u/10-19"), ("orphan_file", "photos/zz/stray.ply"), ("size_mismatch", "photos/a/a.ply")]
    fixed = verify(admin, lambda: NOW, deep=True, fix=True)
    assert sorted(p.kind for p in fixed.fixed) == ["expired_lease", "orphan_file"]
    assert [p.kind for p in fixed.problems] == ["size_mismatch"]  # reported, never "fixed"
    assert "photos/zz/stray.ply" not in admin.books.files and "u/10-19" not in admin.books.leases


def test_remove_on_the_memory_store(mem: tuple[Store, MemoryAdmin]) -> None:
    store, admin = mem
    with pytest.raises(ConfigError, match="never published: typo"):
        remove(admin, ["a", "typo"], "request", NOW)
    assert dataset_status(admin, NOW).published == 3  # nothing changed
    preview = remove(admin, ["a"], "request", NOW, dry_run=True)
    assert preview.dry_run and preview.files_deleted == ["photos/a/a.jpg", "photos/a/a.ply"]
    assert dataset_status(admin, NOW).published == 3
    result = remove(admin, ["a", "typo"], "request", NOW, force=True)
    assert (result.removed, result.blocked) == (["a"], ["typo"])
    assert (dataset_status(admin, NOW).published, dataset_status(admin, NOW).excluded) == (2, 2)
    assert store.item_states(["a"])["a"].excluded
    assert verify(admin, lambda: 0.0).ok  # its files went with it (time 0: no lease has expired yet)


def test_gc_on_the_memory_store(mem: tuple[Store, MemoryAdmin]) -> None:
    store, admin = mem
    store.acquire(Unit("u/0-9", 0, 10), "gamma", ttl_s=1e9, reopen=True)  # a lease on a done unit
    result = gc(admin, NOW)
    assert [le.unit for le in result.expired] == ["u/10-19"]
    assert [le.unit for le in result.on_done_units] == ["u/0-9"]
    assert [le.unit for le in dataset_status(admin, NOW).leases] == ["u/20-29"]


def _methods(proto: type) -> dict[str, list[str]]:
    return {name: list(inspect.signature(fn).parameters) for name, fn in vars(proto).items()
            if callable(fn) and not name.startswith("_")}


@pytest.mark.parametrize(("store_cls", "admin_cls"), [(LocalStore, LocalAdmin), (HubStore, HubAdmin),
                                                      (MemoryStore, MemoryAdmin)])
def test_every_store_implements_both_protocols_with_their_signatures(store_cls: type, admin_cls: type) -> None:
    for proto, cls in ((Store, store_cls), (StoreAdmin, admin_cls)):
        wanted = _methods(proto)
        found = {name: list(inspect.signature(getattr(cls, name)).parameters) for name in wanted
                 if callable(getattr(cls, name, None))}
        assert found == wanted, f"{cls.__name__} vs {proto.__name__}"
    assert isinstance(admin_cls.share_record_every, int) and admin_cls.share_record_every >= 1
