"""LocalStore: publish, ledger queries, followups, compaction, crash repair, card, datasets."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import datasets
import pytest

from sharp_dataset_pipeline.errors import ConfigError, LeaseConflict, StoreError
from sharp_dataset_pipeline.publish import layout
from sharp_dataset_pipeline.publish.card import render_card, render_snapshot_yaml
from sharp_dataset_pipeline.publish.index import decode_rows, encode_rows
from sharp_dataset_pipeline.records import (
    Batch,
    Failure,
    Followup,
    IndexRow,
    ItemState,
    ProcessedItem,
    PublishedFile,
    Unit,
)
from sharp_dataset_pipeline.stores.local import LocalStore


class Clock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_item(work: Path, item_id: str, unit: str = "folder/x/00000-00299", seed: int = 0,
              folder: str = "photos") -> ProcessedItem:
    """A real item: two real files and a row that names them with their sizes and hashes."""
    work.mkdir(parents=True, exist_ok=True)
    row = IndexRow(id=item_id, source="folder", unit=unit, width=64, height=48, focal_px=55.5)
    files = []
    for kind, ext in (("image", "jpg"), ("ply", "ply")):
        data = hashlib.sha256(f"{item_id}{kind}{seed}".encode()).digest() * (10 + seed)
        local = work / f"{item_id}-{seed}.{ext}"
        local.write_bytes(data)
        repo = f"{folder}/{item_id}/{item_id}.{ext}"
        digest = hashlib.sha256(data).hexdigest()
        files.append(PublishedFile(kind, repo, local, len(data), digest))
        setattr(row, f"{kind}_path", repo)
        setattr(row, f"{kind}_size", len(data))
        setattr(row, f"{kind}_sha256", digest)
    return ProcessedItem(row, files)


def index_ids(root: Path) -> list[str]:
    """Every id in every index file (compacted + shards), duplicates kept."""
    ids: list[str] = []
    for path in sorted((root / "data").glob("train*.jsonl")):
        ids += [r.id for r in decode_rows(path.read_bytes())]
    return ids


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path / "repo", clock=Clock())
    s.open()
    yield s
    s.close()


def test_publish_places_files_and_writes_one_shard(store: LocalStore, tmp_path: Path) -> None:
    items = [make_item(tmp_path / "w", f"id{k}") for k in range(3)]
    receipt = store.publish(Batch(client_id="c1", items=items))
    assert receipt.published_ids == ["id0", "id1", "id2"]
    shard = store.root / "data" / receipt.commit
    assert shard.exists() and receipt.commit.startswith("train-shard-20260101T000000-c1-")
    assert sorted(r.id for r in decode_rows(shard.read_bytes())) == ["id0", "id1", "id2"]
    for pi in items:
        for pf in pi.files:
            assert (store.root / pf.repo_path).read_bytes() == pf.local_path.read_bytes()
    assert [r.client_id for r in store.rows()] == ["c1"] * 3


def test_republish_is_ignored_and_does_not_touch_files(store: LocalStore, tmp_path: Path) -> None:
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")]))
    before = (store.root / "photos/a/a.ply").read_bytes()
    again = make_item(tmp_path / "w2", "a", seed=3)  # different bytes for the same id
    receipt = store.publish(Batch(client_id="c2", items=[again, make_item(tmp_path / "w2", "b")]))
    assert receipt.published_ids == ["b"]
    assert (store.root / "photos/a/a.ply").read_bytes() == before
    assert sorted(index_ids(store.root)) == ["a", "b"]
    assert not [p for p in store.root.rglob(".*.tmp-*")]


def test_empty_item_batch_records_ledger_changes_without_a_shard(store: LocalStore) -> None:
    store.acquire(Unit("u/1", 0, 10), "c1", 60)
    receipt = store.publish(Batch(client_id="c1", units_done=["u/1"],
                                  failures=[Failure("x", "u/1", "fetch", "http_404", "gone", False)]))
    assert receipt == type(receipt)(published_ids=[], commit="")
    assert list((store.root / "data").iterdir()) == []
    status = store.unit_status(["u/1", "u/2"])
    assert status["u/1"].done and status["u/1"].lease is None
    assert not status["u/2"].done
    assert store.acquire(Unit("u/1", 0, 10), "c2", 60) is None


def test_a_missing_file_fails_that_item_alone(store: LocalStore, tmp_path: Path) -> None:
    good = make_item(tmp_path / "w", "good", unit="u/0")
    bad = make_item(tmp_path / "w", "bad", unit="u/1")
    bad.files[1].local_path.unlink()
    receipt = store.publish(Batch(client_id="c1", items=[good, bad], units_done=["u/0", "u/1"]))
    assert receipt.published_ids == ["good"]
    assert [(f.item_id, f.reason, f.transient) for f in receipt.failed] == [("bad", "file_changed", True)]
    assert "missing" in receipt.failed[0].detail
    assert receipt.units_held == ["u/1"]
    states = store.item_states(["good", "bad"])
    assert states["good"].published and states["bad"] == ItemState(transient_failures=1)
    assert store.counts().failed == {"file_changed": 1}
    status = store.unit_status(["u/0", "u/1"])
    assert status["u/0"].done and not status["u/1"].done  # the failed item may be retried
    assert index_ids(store.root) == ["good"]
    assert sorted(p.parts[-2] for p in (store.root / "photos").rglob("*") if p.is_file()) == ["good", "good"]
    assert not [p for p in store.root.rglob(".*.tmp-*")]


@pytest.mark.parametrize("change", [b"short", None])
def test_a_file_changed_after_validation_fails_that_item_alone(store: LocalStore, tmp_path: Path,
                                                               change: bytes | None) -> None:
    items = [make_item(tmp_path / "w", f"id{k}") for k in range(3)]
    target = items[1].files[0].local_path
    # A different length, or the same length with other bytes (only the hash can tell).
    target.write_bytes(change if change is not None else bytes(len(target.read_bytes())))
    receipt = store.publish(Batch(client_id="c1", items=items))
    assert receipt.published_ids == ["id0", "id2"]
    assert [(f.item_id, f.reason) for f in receipt.failed] == [("id1", "file_changed")]
    assert ("bytes" if change else "SHA-256") in receipt.failed[0].detail
    assert sorted(index_ids(store.root)) == ["id0", "id2"]
    assert not (store.root / "photos/id1").exists() or not any((store.root / "photos/id1").iterdir())


def test_two_items_with_one_id_publish_the_first_and_fail_the_second(store: LocalStore, tmp_path: Path) -> None:
    first = make_item(tmp_path / "w1", "a", seed=1)
    second = make_item(tmp_path / "w2", "a", seed=2)  # same id, other bytes (a repeated manifest id)
    receipt = store.publish(Batch(client_id="c1", items=[first, second, make_item(tmp_path / "w", "b")]))
    assert receipt.published_ids == ["a", "b"]
    assert [(f.item_id, f.reason, f.transient) for f in receipt.failed] == [("a", "duplicate_id", False)]
    assert sorted(index_ids(store.root)) == ["a", "b"]
    assert (store.root / "photos/a/a.ply").read_bytes() == first.files[1].local_path.read_bytes()
    db = sqlite3.connect(store.root / ".coord/ledger.sqlite3")
    assert db.execute("SELECT reason FROM failures WHERE item_id = 'a'").fetchall() == [("duplicate_id",)]


@pytest.mark.parametrize("repo_path", ["../escape.jpg", ".coord/ledger.sqlite3", "README.md",
                                       "data/train-shard-evil.jsonl", "/abs.jpg"])
def test_item_files_cannot_land_on_store_files(store: LocalStore, tmp_path: Path, repo_path: str) -> None:
    item = make_item(tmp_path / "w", "a")
    pf = item.files[0]
    item.files[0] = PublishedFile(pf.kind, repo_path, pf.local_path, pf.size, pf.sha256)
    receipt = store.publish(Batch(client_id="c1", items=[item, make_item(tmp_path / "w", "b")]))
    assert receipt.published_ids == ["b"]
    assert [(f.item_id, f.reason) for f in receipt.failed] == [("a", "bad_path")]
    assert store.item_states(["a"]) == {"a": ItemState(failed_permanently=True)}
    assert not (store.root / "escape.jpg").exists() and (store.root / "README.md").read_text().startswith("---")


def test_failures_then_publish_wins(store: LocalStore, tmp_path: Path) -> None:
    store.record_failures([Failure("t", "u", "fetch", "timeout", "slow", True)], "c1")
    store.record_failures([Failure("t", "u", "fetch", "timeout", "slow", True)], "c1")
    store.record_failures([Failure("p", "u", "decode", "bad_image", "truncated", False),
                           Failure("q", "u", "fetch", "timeout", "slow", True)], "c1")
    store.record_failures([Failure("q", "u", "fetch", "http_404", "gone", False)], "c1")
    states = store.item_states(["t", "p", "q", "never"])
    assert states["t"] == ItemState(transient_failures=2)
    assert states["p"] == ItemState(failed_permanently=True)
    assert states["q"] == ItemState(failed_permanently=True, transient_failures=1)
    assert "never" not in states
    assert store.counts().failed == {"bad_image": 1, "http_404": 1, "timeout": 1}
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "t")]))
    assert store.item_states(["t"])["t"] == ItemState(published=True)
    assert store.counts().failed == {"bad_image": 1, "http_404": 1}
    rows = sqlite3.connect(store.root / ".coord/ledger.sqlite3").execute(
        "SELECT attempts FROM failures WHERE item_id = 't'").fetchall()
    assert rows == []  # the item is published: its failures are history, not state


def test_item_states_batches_many_ids(store: LocalStore) -> None:
    ids = [f"f{k}" for k in range(1200)]
    store.record_failures([Failure(i, "u", "fetch", "timeout", "", True) for i in ids[::2]], "c1")
    states = store.item_states(ids)
    assert len(states) == 600 and all(s.transient_failures == 1 for s in states.values())


def test_followups_recorded_with_publish_and_completed(store: LocalStore, tmp_path: Path) -> None:
    f1, f2 = Followup("track", "a", "https://x/a"), Followup("track", "b", "https://x/b")
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")], followups=[f1, f2]))
    store.publish(Batch(client_id="c1", followups=[f1]))  # a duplicate is not recorded twice
    assert store.pending_followups("track") == [f1, f2]
    assert store.pending_followups("other") == []
    store.publish(Batch(client_id="c1", followups_done=[f1]))
    assert store.pending_followups("track") == [f2]
    store.complete_followups([f2])
    assert store.pending_followups("track") == []
    assert store.counts().followups_pending == 0


def test_exclusion_blocks_publish_and_drops_row_on_compaction(store: LocalStore, tmp_path: Path) -> None:
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", k) for k in ("a", "b")]))
    store.exclude(["a", "z"], reason="removal request")
    assert store.item_states(["a", "z"]) == {"a": ItemState(published=True, excluded=True),
                                             "z": ItemState(excluded=True)}
    receipt = store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "z")]))
    assert receipt.published_ids == []
    assert not (store.root / "photos/z").exists()
    assert store.compact() == 1
    assert index_ids(store.root) == ["b"]
    assert [r.id for r in store.rows()] == ["b"]


def test_compact_merges_in_publish_order(tmp_path: Path) -> None:
    clock = Clock()
    store = LocalStore(tmp_path / "repo", clock=clock)
    store.open()
    for k, ids in enumerate((["c", "a"], ["b"], ["d"])):
        clock.now += 10
        store.publish(Batch(client_id=f"c{k}", items=[make_item(tmp_path / "w", i) for i in ids]))
    assert store.counts().shards_pending == 3
    assert store.compact() == 4
    files = sorted(p.name for p in (store.root / "data").iterdir() if p.is_file())
    assert files == ["train.jsonl"]
    assert sorted(p.name for p in (store.root / "data/index/files").iterdir()) == ["train.parquet"]  # its twin
    assert [r.id for r in decode_rows((store.root / "data/train.jsonl").read_bytes())] == ["a", "c", "b", "d"]
    assert store.counts().shards_pending == 0
    clock.now += 10
    store.publish(Batch(client_id="c9", items=[make_item(tmp_path / "w", "e")]))
    assert store.compact() == 5
    assert index_ids(store.root) == ["a", "c", "b", "d", "e"]


def test_compaction_leaves_a_shard_whose_file_is_not_written_yet(store: LocalStore, tmp_path: Path) -> None:
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")]))
    late = store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "b")]))
    # The second publisher has committed but not yet written its shard file.
    (store.root / "data" / late.commit).unlink()
    assert store.compact() == 1
    assert store.counts().shards_pending == 1
    store.close()
    store.open()  # the writer "crashed": open rebuilds its shard from the ledger
    assert sorted(index_ids(store.root)) == ["a", "b"]
    assert store.compact() == 2


def test_compaction_racing_publishers_loses_and_duplicates_nothing(store: LocalStore, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def publisher(name: str) -> None:
        try:
            for k in range(15):
                store.publish(Batch(client_id=name, items=[make_item(tmp_path / name, f"{name}{k}")]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(n,)) for n in ("p", "q")]
    for t in threads:
        t.start()
    compactions = 0
    while any(t.is_alive() for t in threads):
        store.compact()
        compactions += 1
        ids = index_ids(store.root)
        assert len(ids) == len(set(ids))
    for t in threads:
        t.join()
    assert not errors and compactions > 0
    ids = index_ids(store.root)
    assert sorted(ids) == sorted([f"p{k}" for k in range(15)] + [f"q{k}" for k in range(15)])
    assert store.compact() == 30


def test_compaction_is_exclusive(tmp_path: Path) -> None:
    a = LocalStore(tmp_path / "repo")
    a.open()
    conn = sqlite3.connect(tmp_path / "repo/.coord/ledger.sqlite3")
    # A live process (this test's parent) holds the maintenance claim.
    conn.execute("INSERT INTO maintenance VALUES ('maintenance', 'someone', ?, 0)", (os.getppid(),))
    conn.commit()
    with pytest.raises(LeaseConflict):
        a.compact()
    conn.execute("UPDATE maintenance SET pid = 2147483647")  # no such process: the claim is void
    conn.commit()
    assert a.compact() == 0
    a.close()


def test_open_repairs_shards_and_temps(store: LocalStore, tmp_path: Path) -> None:
    r1 = store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", k) for k in ("a", "b")]))
    shard = store.root / "data" / r1.commit
    original = shard.read_bytes()
    shard.unlink()
    stray = store.root / "data" / "train-shard-20260101T000000-ghost-abc.jsonl"
    stray.write_text('{"id": "ghost", "source": "s", "unit": "u"}\n')
    staging = store.root / ".coord" / "staging"
    dead_tmp = staging / ".a.ply.tmp-2147483647-00ff"
    dead_shard_tmp = store.root / "data" / f".{r1.commit}.tmp-2147483647-0a"
    live_tmp = staging / f".a.jpg.tmp-{os.getpid()}-00ff"
    for path in (dead_tmp, dead_shard_tmp, live_tmp):
        path.write_bytes(b"partial")
    store.close()
    store.open()
    assert shard.read_bytes() == original
    assert not stray.exists() and not dead_tmp.exists() and not dead_shard_tmp.exists()
    assert live_tmp.exists()  # its writer (this process) is alive


def test_open_undoes_journaled_staging_of_a_dead_publisher(store: LocalStore, tmp_path: Path) -> None:
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")]))
    # What a publisher killed between placing files and committing leaves behind.
    orphan, orphan_tmp = store.root / "photos/o/o.ply", store.root / "photos/o/.o.ply.tmp-2147483647-01"
    kept_tmp = store.root / ".coord/staging/.a.ply.tmp-2147483647-02"
    orphan.parent.mkdir(parents=True)
    for path in (orphan, orphan_tmp, kept_tmp):
        path.write_bytes(b"x")
    db = sqlite3.connect(store.root / ".coord/ledger.sqlite3")
    db.executemany("INSERT INTO intents VALUES (?, ?, ?, ?, 0)", [
        ("photos/o/.o.ply.tmp-2147483647-01", "photos/o/o.ply", "o", 2147483647),
        (".coord/staging/.a.ply.tmp-2147483647-02", "photos/a/a.ply", "a", 2147483647),
        (".coord/staging/.b.ply.tmp-1-03", "photos/b/b.ply", "b", os.getpid()),
    ])
    db.commit()
    store.close()
    store.open()
    assert not orphan.exists() and not orphan_tmp.exists() and not kept_tmp.exists()
    assert (store.root / "photos/a/a.ply").exists()  # a recorded item keeps its files
    left = [r[0] for r in db.execute("SELECT item_id FROM intents")]
    assert left == ["b"]  # a live publisher's journal is not touched
    db.close()


def test_card_written_on_open_and_refreshed(store: LocalStore, tmp_path: Path) -> None:
    readme = store.root / "README.md"
    assert "configs:" in readme.read_text() and "data/train*.jsonl" in readme.read_text()
    assert "Sources: none yet." in readme.read_text()
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")]))
    store.write_card(sources=["unsplash"])
    assert "Sources: folder, unsplash." in readme.read_text()
    readme.write_text("custom")
    store.close()
    store.open()
    assert readme.read_text() == "custom"  # never overwritten by open()


def test_counts_and_leases(store: LocalStore, tmp_path: Path) -> None:
    store.acquire(Unit("u/1", 0, 5), "c1", 60)
    store.acquire(Unit("u/2", 0, 5), "c2", 60)
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")], units_done=["u/1"]))
    c = store.counts()
    assert (c.published, c.units_done, c.leases, c.shards_pending) == (1, 1, 1, 1)
    assert [(lease.unit, lease.owner) for lease in store.leases()] == [("u/2", "c2")]


def test_store_must_be_opened(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="open"):
        LocalStore(tmp_path / "r").item_states(["a"])


def test_load_dataset_after_publishes_and_compaction(store: LocalStore, tmp_path: Path) -> None:
    for b in range(3):
        items = [make_item(tmp_path / "w", f"i{b}{k}") for k in range(4)]
        items[0].row.focal_px = 1000  # type: ignore[assignment]  # an int must still load as float64
        store.publish(Batch(client_id="c1", items=items))

    def load(tag: str) -> datasets.Dataset:
        return datasets.load_dataset(str(store.root), cache_dir=str(tmp_path / f"cache-{tag}"))["train"]

    before = load("shards")
    assert before.num_rows == 12 and len(set(before["id"])) == 12
    assert before.features["image_size"].dtype == "int64"
    assert before.features["focal_px"].dtype == "float64"
    store.compact()
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "late")]))
    after = load("compacted")
    assert after.num_rows == 13 and len(set(after["id"])) == 13
    assert after.features == before.features


def _other_filesystem(tmp_path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        return shm
    return None


def test_files_on_other_filesystems_are_copied_and_staged_beside_destination(tmp_path: Path) -> None:
    other = _other_filesystem(tmp_path)
    if other is None:
        pytest.skip("needs a second writable filesystem (/dev/shm)")
    scratch = other / f"sharp-test-{os.getpid()}-{tmp_path.name}"
    try:
        root = tmp_path / "repo"
        root.mkdir()
        (scratch / "mnt").mkdir(parents=True)
        # Item a: its source files sit on another filesystem, so they cannot be hard-linked.
        a = make_item(scratch / "work", "a", folder="local")
        # Item b: its destination folder is mounted elsewhere, so a rename from .coord/ could not
        # move it there; it is staged beside its destination instead.
        (root / "photos").symlink_to(scratch / "mnt", target_is_directory=True)
        b = make_item(tmp_path / "work", "b")
        store = LocalStore(root)
        store.open()
        assert store.publish(Batch(client_id="c", items=[a, b])).published_ids == ["a", "b"]
        for pf in a.files + b.files:
            published = root / pf.repo_path
            assert published.read_bytes() == pf.local_path.read_bytes()
            assert os.stat(published).st_dev != os.stat(pf.local_path).st_dev  # so it was copied
        assert not [p for p in scratch.rglob("*") if ".tmp-" in p.name]
        assert not [p for p in root.rglob("*") if ".tmp-" in p.name]
        store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_failure_source_is_kept_and_an_old_ledger_gains_the_column(tmp_path: Path) -> None:
    root = tmp_path / "old"
    (root / ".coord").mkdir(parents=True)
    old = sqlite3.connect(root / ".coord/ledger.sqlite3")
    # The failures table as the first release wrote it (no ``source`` column).
    old.execute("""CREATE TABLE failures (
        item_id TEXT NOT NULL, unit TEXT NOT NULL, stage TEXT NOT NULL, reason TEXT NOT NULL,
        detail TEXT NOT NULL, transient INTEGER NOT NULL, attempts INTEGER NOT NULL,
        transient_attempts INTEGER NOT NULL, last_at REAL NOT NULL, client TEXT NOT NULL,
        PRIMARY KEY (item_id, unit))""")
    old.execute("INSERT INTO failures VALUES ('o', 'u', 'fetch', 'http_404', 'gone', 0, 1, 0, 1.0, 'c0')")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    store = LocalStore(root, clock=Clock())
    store.open()
    try:
        store.record_failures([Failure("n", "u", "fetch", "empty_file", "empty", False, source="a/empty.jpg")], "c1")
        # A retry that does not know its input keeps the recorded one.
        store.record_failures([Failure("n", "u", "fetch", "empty_file", "empty", False)], "c1")
        assert store.item_states(["o"])["o"] == ItemState(failed_permanently=True)
    finally:
        store.close()
    rows = dict(sqlite3.connect(root / ".coord/ledger.sqlite3").execute("SELECT item_id, source FROM failures"))
    assert rows == {"o": "", "n": "a/empty.jpg"}


HOLDER = r'''
import os, signal, sys
from pathlib import Path
from sharp_dataset_pipeline.records import Unit
from sharp_dataset_pipeline.stores.local import LocalStore

store = LocalStore(Path(sys.argv[1]))
store.open()
assert store.acquire(Unit(sys.argv[2], 0, 10), "holder", 1800.0) is not None
print("held", flush=True)
sys.stdin.readline()  # hold the lease until told, then die without releasing it
os.kill(os.getpid(), signal.SIGKILL)
'''


def _holder(tmp_path: Path, root: Path, unit: str):
    import subprocess
    import sys

    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    child = subprocess.Popen([sys.executable, str(script), str(root), unit], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(store: LocalStore, tmp_path: Path) -> None:
    child = _holder(tmp_path, store.root, "u/1")
    unit = Unit("u/1", 0, 10)
    assert store.acquire(unit, "other", 60) is None  # the holder is alive: its lease stands
    assert child.stdin is not None
    child.stdin.write("die\n")
    child.stdin.flush()
    child.wait()
    lease = store.acquire(unit, "other", 60)  # same clock: long before the 1800 s expiry
    assert lease is not None and lease.owner == "other"
    assert [(x.unit, x.owner) for x in store.leases()] == [("u/1", "other")]


def test_open_frees_a_dead_redos_leases_on_done_units_and_keeps_live_ones(store: LocalStore, tmp_path: Path) -> None:
    """A `run --redo` killed mid-way leaves leases on units that are done: no plain run takes those over, so
    the next open frees the ones whose holder is a process of this host that has exited (verify is then
    clean), and leaves a live holder's alone."""
    dead, live = _holder(tmp_path, store.root, "u/dead"), _holder(tmp_path, store.root, "u/live")
    assert dead.stdin is not None
    dead.stdin.write("die\n")
    dead.stdin.flush()
    dead.wait()
    db = sqlite3.connect(store.root / ".coord/ledger.sqlite3")
    with db:  # both units were done before the redo leased them again
        db.executemany("INSERT INTO units_done (unit, done_at, client) VALUES (?, 0, 'holder')",
                       [("u/dead",), ("u/live",)])
    db.close()
    again = LocalStore(store.root, clock=Clock())
    again.open()
    try:
        assert [(x.unit, x.owner) for x in again.leases()] == [("u/live", "holder")]
        assert "u/dead" not in {p.subject for p in again.admin().verify(time.time()).problems}
    finally:
        again.close()
        assert live.stdin is not None
        live.stdin.write("die\n")
        live.stdin.flush()
        live.wait()


def test_a_lease_of_another_host_waits_for_its_expiry(store: LocalStore, tmp_path: Path) -> None:
    child = _holder(tmp_path, store.root, "u/2")
    assert child.stdin is not None
    child.stdin.write("die\n")
    child.stdin.flush()
    child.wait()
    db = sqlite3.connect(store.root / ".coord/ledger.sqlite3")
    with db:
        db.execute("UPDATE leases SET host = 'another-machine'")  # its pid says nothing here
    db.close()
    assert store.acquire(Unit("u/2", 0, 10), "other", 60) is None
    import time

    store._clock.now = time.time() + 1801  # type: ignore[attr-defined]  # the child's clock is real
    assert store.acquire(Unit("u/2", 0, 10), "other", 60) is not None


def test_failure_rows_are_cleared_when_the_item_is_published_later(store: LocalStore, tmp_path: Path) -> None:
    # Disk full during post-processing: the item fails (transient); a rerun publishes it.
    store.record_failures([Failure("a", "u", "postprocess", "disk_full", "No space left on device", True)], "c1")
    assert store.counts().failed == {"disk_full": 1}
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a", unit="u")]))
    db = sqlite3.connect(store.root / ".coord/ledger.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM failures").fetchone() == (0,)
    db.close()
    assert store.counts().failed == {}
    assert store.item_states(["a"])["a"].published


def _load_ids(root: Path, cache: Path) -> list[str]:
    return sorted(datasets.load_dataset(str(root), cache_dir=str(cache))["train"]["id"])


def test_datasets_fingerprints_a_card_with_configs_by_patterns_only(tmp_path: Path) -> None:
    """The upstream behaviour our fix works around: ``datasets`` hashes a local folder whose card has
    ``configs`` by the card and the unresolved patterns, so new files alone never change its cache."""
    root = tmp_path / "plain" / "my-splats"
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text(render_card(title="t", sources=["folder"], index_glob="data/train*.jsonl"))
    (root / "data" / "train-a.jsonl").write_bytes(encode_rows([IndexRow(id="a", source="folder", unit="u")]))
    cache = tmp_path / "cache"
    assert _load_ids(root, cache) == ["a"]
    (root / "data" / "train-b.jsonl").write_bytes(encode_rows([IndexRow(id="b", source="folder", unit="u")]))
    assert _load_ids(root, cache) == ["a"]  # stale: the new file is not seen
    (root / ".huggingface.yaml").write_text(render_snapshot_yaml("after-b"))
    assert _load_ids(root, cache) == ["a", "b"]  # a changed snapshot name is a new cache entry


def test_a_load_after_a_publish_sees_that_publish(tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # one cache for every load, as a user's default cache is
    first = LocalStore(tmp_path / "one" / "my-splats", clock=Clock())
    first.open()
    first.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", f"a{k}") for k in range(3)]))
    assert _load_ids(first.root, cache) == ["a0", "a1", "a2"]
    first.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", f"b{k}") for k in range(4)]))
    assert len(_load_ids(first.root, cache)) == 7
    first.compact()
    assert len(_load_ids(first.root, cache)) == 7
    # Another store with the same folder name has its own data, not the first one's cache.
    second = LocalStore(tmp_path / "two" / "my-splats", clock=Clock())
    second.open()
    second.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w2", f"z{k}") for k in range(2)]))
    assert _load_ids(second.root, cache) == ["z0", "z1"]
    first.close()
    second.close()


def _made_by(pi: ProcessedItem, predictor: str, model: str) -> ProcessedItem:
    pi.row.predictor, pi.row.model_version = predictor, model
    return pi


def test_redo_model_changed_replaces_rows_and_files_in_one_step(store: LocalStore, tmp_path: Path) -> None:
    planar = [_made_by(make_item(tmp_path / "p", f"id{k}", seed=1), "planar", "planar-1") for k in range(3)]
    extra = tmp_path / "p" / "id0.webp"
    extra.write_bytes(b"old preview")
    planar[0].files.append(PublishedFile("preview", "photos/id0/id0.webp", extra, 11,
                                         hashlib.sha256(b"old preview").hexdigest()))
    planar[0].row.extra_files = '[{"path": "photos/id0/id0.webp", "size": 11}]'
    store.publish(Batch(client_id="c1", items=planar))
    store.compact()  # id0..id2 now live in the compacted index
    store.publish(Batch(client_id="c1", items=[_made_by(make_item(tmp_path / "p", "id3", seed=1), "planar", "p1")]))
    assert store.item_states(["id0"])["id0"] == ItemState(published=True, predictor="planar", model_version="planar-1")

    def sharp(k: int) -> ProcessedItem:
        return _made_by(make_item(tmp_path / "s", f"id{k}", seed=2), "sharp", "sharp-2")

    # Without --redo a SHARP item never replaces a planar one.
    assert store.publish(Batch(client_id="c1", items=[sharp(0)])).published_ids == []
    receipt = store.publish(Batch(client_id="c1", items=[sharp(0), sharp(3), sharp(5)], redo="model-changed"))
    assert receipt.published_ids == ["id0", "id3", "id5"] and receipt.replaced_ids == ["id0", "id3"]
    ids = index_ids(store.root)
    assert sorted(ids) == ["id0", "id1", "id2", "id3", "id5"]  # exactly one row per id
    rows = {r.id: r for p in (store.root / "data").glob("train*.jsonl") for r in decode_rows(p.read_bytes())}
    assert rows["id0"].predictor == "sharp" and rows["id1"].predictor == "planar"
    new_ply = sharp(0).files[1]
    # The changed PLY has a new, content-tagged name; the old one is gone with the old row.
    assert rows["id0"].ply_path == f"photos/id0/id0.{new_ply.sha256[:12]}.ply"
    assert (store.root / rows["id0"].ply_path).read_bytes() == new_ply.local_path.read_bytes()
    assert rows["id0"].ply_sha256 == new_ply.sha256
    assert not (store.root / "photos/id0/id0.ply").exists()
    assert not (store.root / "photos/id0/id0.webp").exists()  # the new row does not name it
    assert store.counts().published == 5
    # The same model again is not a change: nothing is replaced.
    again = store.publish(Batch(client_id="c1", items=[sharp(0)], redo="model-changed"))
    assert again.published_ids == [] and again.replaced_ids == []
    store.close()
    check = LocalStore(store.root, clock=Clock())
    check.open()  # repair finds nothing to change
    assert sorted(index_ids(store.root)) == ["id0", "id1", "id2", "id3", "id5"]
    check.close()


def test_a_full_item_folder_fans_out_by_id_prefix_as_on_the_hub(store: LocalStore, tmp_path: Path) -> None:
    for k in range(layout.FANOUT_THRESHOLD):  # the item folders of 5000 earlier items
        (store.root / "photos" / f"p{k:05d}").mkdir(parents=True)
    item = make_item(tmp_path / "w", "zq1")
    hub_view = layout.placed(item, {"photos": layout.FANOUT_THRESHOLD})  # what the hub store decides
    assert store.publish(Batch(client_id="c1", items=[item])).published_ids == ["zq1"]
    (row,) = list(store.rows())
    assert row.image_path == "photos/zq/zq1/zq1.jpg" == hub_view.row.image_path
    assert row.ply_path == "photos/zq/zq1/zq1.ply" == hub_view.row.ply_path
    assert (store.root / row.ply_path).read_bytes() == item.files[1].local_path.read_bytes()
    assert not (store.root / "photos" / "zq1").exists()


def test_a_store_path_that_is_a_file_is_a_clear_config_error(tmp_path: Path) -> None:
    """A mistyped STORE naming a file: one line naming the store and the cause (exit 2 in the CLI), not a
    traceback from deep inside the layout's creation; the file is left as it was."""
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(ConfigError, match=r"STORE local:.*notes\.txt cannot be used as a local store: Not a directory"):
        LocalStore(target).open()
    assert target.read_text() == "mine"
