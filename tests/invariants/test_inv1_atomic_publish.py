"""Invariant 1: an item is done iff its index row is published, with its files, in one step.

A real child process publishes batches in a loop (and compacts now and then) and is killed
with SIGKILL at random moments; after each kill, ``open()`` must leave a store where every
recorded item has exactly one index row and all its files, and nothing else shows.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sharp_dataset_pipeline.publish.index import decode_rows
from sharp_dataset_pipeline.records import Batch, IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.stores.local import LocalStore

CHILD = r'''
import hashlib, sys
from pathlib import Path
from sharp_dataset_pipeline.records import Batch, IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.stores.local import LocalStore

root, work, prefix, previous = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
work.mkdir(parents=True, exist_ok=True)
store = LocalStore(root)
store.open()

def item(item_id, unit, k):
    row = IndexRow(id=item_id, source="folder", unit=unit)
    files = []
    for kind, ext, size in (("image", "jpg", 40_000), ("ply", "ply", 90_000)):
        data = (hashlib.sha256(f"{item_id}{kind}{k}".encode()).digest() * (size // 32 + 1))[:size + k]
        local = work / f"{item_id}-{k}.{ext}"
        local.write_bytes(data)
        repo = f"photos/{item_id[:2]}/{item_id}/{item_id}.{ext}"
        digest = hashlib.sha256(data).hexdigest()
        files.append(PublishedFile(kind, repo, local, len(data), digest))
        setattr(row, kind + "_path", repo)
        setattr(row, kind + "_size", len(data))
        setattr(row, kind + "_sha256", digest)
    return ProcessedItem(row, files)

print("ready", flush=True)
k = 0
while True:
    unit = f"u/{prefix}/{k}"
    items = [item(f"{prefix}{k}x{j}", unit, k) for j in range(3)]
    if previous:  # an id another (killed) client may or may not have published already
        items.append(item(previous, unit, k))
    store.publish(Batch(client_id=prefix, items=items, units_done=[unit]))
    if k % 5 == 4:
        store.compact()
    k += 1
'''


def check_store(root: Path) -> int:
    """Open (repairs), then check invariant 1 from the outside; returns published count."""
    store = LocalStore(root)
    store.open()
    store.close()
    db = sqlite3.connect(root / ".coord" / "ledger.sqlite3")
    recorded = {i: u for i, u in db.execute("SELECT id, unit FROM items")}
    done = {u for (u,) in db.execute("SELECT unit FROM units_done")}
    committed = {n for (n,) in db.execute("SELECT name FROM shards WHERE state = 'committed'")}
    db.close()
    shown: list[str] = []
    for path in sorted((root / "data").glob("*.jsonl")):
        assert path.name == "train.jsonl" or path.name in committed, f"unrecorded shard {path.name}"
        for row in decode_rows(path.read_bytes()):
            shown.append(row.id)
            for kind in ("image", "ply"):
                data = (root / getattr(row, f"{kind}_path")).read_bytes()
                assert len(data) == getattr(row, f"{kind}_size")
                assert hashlib.sha256(data).hexdigest() == getattr(row, f"{kind}_sha256")
    assert len(shown) == len(set(shown)), "an id shows twice"
    assert set(shown) == set(recorded), "index and ledger disagree"
    # Items and their unit's done marker were recorded by the same transaction.
    units_with_items = set(recorded.values())
    assert units_with_items <= done
    leftovers = [p for p in root.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    # No visible file without a recorded item (a kill between rename and commit is undone).
    on_disk = {p.parts[-2] for p in (root / "photos").rglob("*") if p.is_file()}
    assert on_disk <= set(recorded)
    return len(recorded)


def _wait_for_a_publish(root: Path, prefix: str, child: subprocess.Popen[str], timeout_s: float = 120.0) -> None:
    """Until the ledger (committed state, read-only) has an item of this child: a loaded machine may
    take seconds before a first publish, so a fixed delay cannot promise one."""
    deadline = time.monotonic() + timeout_s
    ledger = root / ".coord" / "ledger.sqlite3"
    while time.monotonic() < deadline and child.poll() is None:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=30) as db:
            if db.execute("SELECT 1 FROM items WHERE id LIKE ? LIMIT 1", (prefix + "%",)).fetchall():
                return
        time.sleep(0.02)
    raise AssertionError(f"child {prefix} published nothing in {timeout_s:.0f} s")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_random_moments_never_breaks_invariant_1(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(1234)
    previous, kills, totals = "", 0, []
    for n in range(12):
        prefix = f"k{n:02d}"
        child = subprocess.Popen(
            [sys.executable, str(script), str(root), str(tmp_path / "work" / prefix), prefix, previous],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.stderr.read() if child.stderr else ""
        if n in (0, 11):  # the first and last child publish before their kill, so totals must grow
            _wait_for_a_publish(root, prefix, child)
        time.sleep(rng.uniform(0.0, 0.25))  # a random moment, not a measurement
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        totals.append(check_store(root))
        previous = f"{prefix}0x0"
    assert kills >= 10
    assert totals[-1] > totals[0] > 0


def test_files_are_in_place_before_the_item_counts_as_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "repo")
    store.open()
    work = tmp_path / "w"
    work.mkdir()
    local = work / "a.ply"
    local.write_bytes(b"ply bytes")
    row = IndexRow(id="a", source="folder", unit="u", ply_path="p/a/a.ply", ply_size=9)
    pf = PublishedFile("ply", "p/a/a.ply", local, 9, hashlib.sha256(b"ply bytes").hexdigest())
    root = store.root
    ledger = root / ".coord" / "ledger.sqlite3"

    def done() -> bool:  # what any other reader of the ledger sees (committed state only)
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as db:
            return bool(db.execute("SELECT 1 FROM items WHERE id = 'a'").fetchall())

    def shard_has_row() -> bool:
        return any(b'"id": "a"' in p.read_bytes() or b'"id":"a"' in p.read_bytes()
                   for p in (root / "data").glob("*.jsonl"))

    # Watch every placement (the stdlib calls, passed through unchanged) and the state readers see after it.
    events: list[tuple[str, bool, bool, bool]] = []
    for name in ("replace", "link", "rename"):
        real = getattr(os, name)

        def watched(src, dst, *args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            out = _real(src, dst, *args, **kwargs)
            target = Path(dst)
            if root in target.parents:
                events.append((f"{_name} {target.relative_to(root).as_posix()}", (root / "p/a/a.ply").is_file(),
                               shard_has_row(), done()))
            return out

        monkeypatch.setattr(os, name, watched)
    receipt = store.publish(Batch(client_id="c", items=[ProcessedItem(row, [pf])]))
    monkeypatch.undo()
    assert receipt.published_ids == ["a"] and done()
    placed = [i for i, e in enumerate(events) if e[0] == "replace p/a/a.ply"]
    indexed = [i for i, e in enumerate(events) if e[2]]
    assert placed and indexed, events
    assert placed[0] < indexed[0], f"the index named the item before its file was placed: {events}"
    assert not any(is_done for *_, is_done in events[: indexed[0] + 1]), f"done before it was indexed: {events}"
    assert all(ply_there for _, ply_there, _, is_done in events if is_done), events
    assert (store.root / "p/a/a.ply").read_bytes() == b"ply bytes"
    local.unlink()  # the work copy may go: the published file is its own link or copy
    assert (store.root / "p/a/a.ply").read_bytes() == b"ply bytes"
    assert os.listdir(store.root / "p/a") == ["a.ply"]


KILL_AT = r'''
import hashlib, os, signal, sys
from pathlib import Path
from sharp_dataset_pipeline.records import Batch, IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.stores.local import LocalStore

root, work, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
work.mkdir(parents=True, exist_ok=True)
store = LocalStore(root)
store.open()
calls = 0

def counted(fn):
    def wrapper(*args, **kwargs):
        global calls
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 just before this file-system step
        return fn(*args, **kwargs)
    return wrapper

for name in ("fsync", "replace", "link", "unlink", "rename"):
    setattr(os, name, counted(getattr(os, name)))

def item(item_id, unit, model=""):
    row = IndexRow(id=item_id, source="folder", unit=unit, predictor="planar", model_version=model or "p1")
    files = []
    for kind, ext in (("image", "jpg"), ("ply", "ply")):
        # A redo (model given) makes the same photo but another PLY.
        data = hashlib.sha256(f"{item_id}{kind}{model if kind == 'ply' else ''}".encode()).digest() * 100
        local = work / f"{item_id}{model}.{ext}"
        local.write_bytes(data)
        repo = f"photos/{item_id}/{item_id}.{ext}"
        digest = hashlib.sha256(data).hexdigest()
        files.append(PublishedFile(kind, repo, local, len(data), digest))
        setattr(row, kind + "_path", repo)
        setattr(row, kind + "_size", len(data))
        setattr(row, kind + "_sha256", digest)
    return ProcessedItem(row, files)

tag = root.name
store.publish(Batch(client_id="c", items=[item(f"{tag}a{j}", "u/a") for j in range(2)], units_done=["u/a"]))
store.compact()
store.publish(Batch(client_id="c", items=[item(f"{tag}b{j}", "u/b") for j in range(2)], units_done=["u/b"]))
# run --redo: one item from the compacted index, one from a shard, replaced in one step.
store.publish(Batch(client_id="c", items=[item(f"{tag}{g}0", f"u/{g}", "p2") for g in "ab"], redo="model-changed"))
print(calls, flush=True)
'''


def _reader_view(root: Path) -> tuple[set[str], set[str]]:
    """What a reader sees without opening the store: ids in the ledger, ids in the index files;
    and every row of every index file names files that have its recorded size and SHA-256."""
    db = sqlite3.connect(root / ".coord" / "ledger.sqlite3")
    recorded = {i for (i,) in db.execute("SELECT id FROM items")}
    db.close()
    shown: set[str] = set()
    for path in (root / "data").glob("*.jsonl"):
        for row in decode_rows(path.read_bytes()):
            shown.add(row.id)
            for kind in ("image", "ply"):
                data = (root / getattr(row, f"{kind}_path")).read_bytes()
                assert (len(data), hashlib.sha256(data).hexdigest()) == (
                    getattr(row, f"{kind}_size"), getattr(row, f"{kind}_sha256")), f"{row.id} {kind}: other bytes"
    return recorded, shown


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_after_kill9_at_any_step_readers_never_see_less_than_the_ledger(tmp_path: Path) -> None:
    """kill -9 before every file-system step of two publishes, a compaction and a ``--redo`` publish:
    a reader of the index files (no open(), no repair) always sees at least every item the ledger
    records, and every row it sees names files with that row's size and hash (a redo never puts a new
    PLY under the old row); open() then leaves each recorded row with exactly its files."""
    script = tmp_path / "kill_at.py"
    script.write_text(KILL_AT)

    def run(n: int) -> subprocess.CompletedProcess[str]:
        root = tmp_path / f"s{n:03d}"
        return subprocess.run([sys.executable, str(script), str(root), str(tmp_path / f"w{n:03d}"), str(n)],
                              capture_output=True, text=True, timeout=120)

    full = run(0)  # never killed: how many steps there are
    assert full.returncode == 0, full.stderr
    steps = int(full.stdout.split()[-1])
    assert steps > 30
    redone = [r for r in LocalStore(tmp_path / "s000").rows() if r.model_version == "p2"]
    assert sorted(r.id for r in redone) == ["s000a0", "s000b0"]
    recorded_seen = 0
    for n in range(1, steps + 1):
        done = run(n)
        assert done.returncode == -signal.SIGKILL, done.stderr
        root = tmp_path / f"s{n:03d}"
        recorded, shown = _reader_view(root)
        assert recorded <= shown, f"kill at step {n}: ledger has {sorted(recorded - shown)} the index lacks"
        recorded_seen = max(recorded_seen, len(recorded))
        check_store(root)  # and open() then restores exactly one row per item, files intact
        _reader_view(root)
        named = {p for r in LocalStore(root).rows() for p in (r.image_path, r.ply_path)}
        on_disk = {p.relative_to(root).as_posix() for p in (root / "photos").rglob("*") if p.is_file()}
        assert on_disk == named, f"kill at step {n}: files no row names: {sorted(on_disk - named)}"
    assert recorded_seen == 4
