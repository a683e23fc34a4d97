"""`verify` (plain, --deep, --fix) and `status` on a local store in the sharded layout (issue #14), through
the real CLI on a dataset the real pipeline made: a member's bytes changed in place, a shard deleted, a
member's tar header wiped, an orphan shard; --fix removes the orphan and never a shard a row references."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.e2e_utils import make_photos, run_cli
from sharp_dataset_pipeline.ledger.verify import Problem, VerifyReport
from sharp_dataset_pipeline.publish.parquet_index import row_members
from sharp_dataset_pipeline.stores.local import LocalStore
from sharp_dataset_pipeline.stores.local_verify import fix_local
from stores.test_local_shards import KILL_BEFORE_COMMIT

SAMPLE_PHOTOS = 6  # the bundled samples that are photos
FIELDS = 4  # jpg, json, spz, webp per item (LAYOUT=shards defaults)
STEPS = 3  # publish steps of two items each (HF_UPLOAD_BATCH_SIZE=2): one tar each
ORPHAN = "data/shards/ab/abababababababababab-000.tar"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("built")
    done = run_cli(work, "run", "--source", "samples", "--predictor", "planar", "--planar-resolution", "32",
                   "--store", f"local:{work / 'store'}", LAYOUT="shards", HF_UPLOAD_BATCH_SIZE="2")
    assert done.returncode == 0, done.stderr
    return work / "store"


@pytest.fixture
def store(built: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(built, root)
    return root


def _ops(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(root.parent, *args, "--store", f"local:{root}")


def _verify(root: Path, *args: str) -> tuple[int, dict]:
    done = _ops(root, "verify", "--json", *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def _problems(report: dict) -> list[tuple[str, str]]:
    return sorted((p["kind"], p["subject"]) for p in report["problems"])


def _rows(root: Path) -> list:
    return sorted(LocalStore(root).rows(), key=lambda r: r.id)


def test_deep_verify_of_a_fresh_sharded_store_checks_every_member(store: Path) -> None:
    done = _ops(store, "verify", "--deep")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (f"{SAMPLE_PHOTOS} rows, {STEPS} files, {SAMPLE_PHOTOS * FIELDS} shard members" in done.stdout
            and "(with hashes)" in done.stdout and "consistent: no problems found" in done.stdout)
    rc, report = _verify(store)
    assert rc == 0 and report["ok"] and report["rows"] == SAMPLE_PHOTOS
    assert report["members"] == SAMPLE_PHOTOS * FIELDS and report["files"] == STEPS


def test_changed_member_bytes_are_found_by_deep_verify_only(store: Path) -> None:
    victim = _rows(store)[2]
    spz = next(m for m in row_members(victim) if m.field == "spz")
    tar = store / spz.shard
    data = bytearray(tar.read_bytes())
    data[spz.offset + spz.size // 2] ^= 0xFF  # same size, same headers, other bytes
    tar.write_bytes(bytes(data))
    rc, plain = _verify(store)
    assert rc == 0 and plain["ok"]  # the member listing is intact: a plain verify cannot see it
    rc, deep = _verify(store, "--deep")
    assert rc == 1 and _problems(deep) == [("member_mismatch", victim.id)]
    assert f"{spz.name}: sha256" in deep["problems"][0]["detail"] and not deep["problems"][0]["fixable"]


def test_a_deleted_shard_is_a_missing_member_of_every_item_in_it(store: Path) -> None:
    rows = _rows(store)
    assert len({r.shard_path for r in rows}) == STEPS
    gone = rows[0].shard_path
    (store / gone).unlink()
    rc, report = _verify(store)
    lost = sorted(r.id for r in rows if r.shard_path == gone)
    assert rc == 1 and len(lost) == SAMPLE_PHOTOS // STEPS
    assert sorted(set(_problems(report))) == [("missing_member", i) for i in lost]
    assert len(report["problems"]) == len(lost) * FIELDS
    assert all(p["target"] == gone and not p["fixable"] for p in report["problems"])


def test_plain_verify_reads_the_member_listing_of_each_tar(store: Path) -> None:
    victim = _rows(store)[-1]
    last = max(row_members(victim), key=lambda m: m.offset)
    tar = store / last.shard
    data = bytearray(tar.read_bytes())
    header = last.offset - 512  # the member's ustar header block, just before its data
    data[header:header + 512] = bytes(512)  # wiped: the tar ends there for a reader; the size is unchanged
    tar.write_bytes(bytes(data))
    assert last.offset == max(m.offset for r in _rows(store) if r.shard_path == last.shard
                              for m in row_members(r))  # the tar's last member: nothing after it is lost
    rc, report = _verify(store)
    assert rc == 1 and _problems(report) == [("missing_member", victim.id)]
    assert last.name in report["problems"][0]["detail"]


def test_an_orphan_shard_is_reported_and_fix_removes_only_it(store: Path) -> None:
    real = store / _rows(store)[0].shard_path
    orphan = store / ORPHAN
    orphan.parent.mkdir(parents=True, exist_ok=True)  # a real shard's folder too, when its batch starts "ab"
    shutil.copyfile(real, orphan)
    rc, report = _verify(store)
    assert rc == 1 and _problems(report) == [("orphan_file", ORPHAN)] and report["problems"][0]["fixable"]
    done = _ops(store, "verify", "--fix", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fixed 1 problems" in done.stdout and ORPHAN in done.stdout
    assert not orphan.exists() and real.is_file()
    rc, after = _verify(store, "--deep")
    assert rc == 0 and after["members"] == SAMPLE_PHOTOS * FIELDS


def test_fix_never_deletes_a_shard_a_row_references(store: Path) -> None:
    """A stale report (a shard that was an orphan when scanned, its publish step committed since) is
    re-checked under the write lock: the rows that name the shard keep it."""
    tar = _rows(store)[0].shard_path
    stale = VerifyReport(store="stale", deep=False, problems=[Problem("orphan_file", tar, "stale", tar)])
    assert fix_local(store, LocalStore(store).index_path, stale, time.time()) == []
    assert (store / tar).is_file()
    rc, report = _verify(store, "--deep")
    assert rc == 0 and report["ok"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_fix_leaves_the_tars_of_a_publish_step_that_is_placing_them(tmp_path: Path) -> None:
    """A publish step killed between placing its tars and its ledger commit: the tars are orphans to
    verify, but the step's journal still names them, so --fix leaves them to the store's crash repair
    (which rolls the step back on the next open)."""
    root = tmp_path / "s"
    script = tmp_path / "kill.py"
    script.write_text(KILL_BEFORE_COMMIT)
    done = subprocess.run([sys.executable, str(script), str(root), str(tmp_path / "w"),
                           str(Path(__file__).resolve().parents[1])], capture_output=True, text=True, timeout=180)
    assert done.returncode == -signal.SIGKILL, done.stderr
    tars = sorted(p.relative_to(root).as_posix() for p in (root / "data").rglob("*.tar"))
    assert len(tars) == 2  # the splats' tar and the PLYs' tar
    rc, report = _verify(root)
    assert rc == 1 and [s for k, s in _problems(report) if k == "orphan_file"] == tars
    fixed = _ops(root, "verify", "--fix", "--yes")
    assert fixed.returncode == 1 and "fixed 0 problems" not in fixed.stdout
    assert all((root / t).is_file() for t in tars)
    store = LocalStore(root)
    store.open()  # crash repair: the step never committed, its files go
    store.close()
    assert not list((root / "data").rglob("*.tar"))
    rc, report = _verify(root, "--deep")
    assert rc == 0 and report["rows"] == 0


def test_a_lost_parquet_index_shard_is_an_index_mismatch(store: Path) -> None:
    rows = _rows(store)
    step = rows[0].shard_path.rsplit("/", 1)[-1].split("-")[0]  # the batch digest names the step's files
    pending = next((store / "data" / "index").rglob(f"{step}.parquet"))
    pending.unlink()
    rc, report = _verify(store)
    lost = sorted(r.id for r in rows if r.shard_path == rows[0].shard_path)
    assert rc == 1 and _problems(report) == [("index_mismatch", i) for i in lost]
    assert all("not in the Parquet index" in p["detail"] for p in report["problems"])


def test_an_unreadable_parquet_index_file_is_reported_not_a_crash(store: Path) -> None:
    pending = sorted((store / "data" / "index").rglob("*.parquet"))[0]
    pending.write_bytes(b"not parquet at all" * 10)
    rc, report = _verify(store)
    rel = pending.relative_to(store).as_posix()
    assert rc == 1 and ("index_mismatch", rel) in _problems(report)
    assert "not readable Parquet" in next(p["detail"] for p in report["problems"] if p["subject"] == rel)


def test_status_of_a_sharded_store(store: Path) -> None:
    make_photos(store.parent / "more", 3, seed=5)
    more = run_cli(store.parent, "run", "--source", f"folder:{store.parent / 'more'}", "--predictor", "planar",
                   "--planar-resolution", "32", "--client-id", "beta", "--store", f"local:{store}")
    assert more.returncode == 0, more.stderr
    done = _ops(store, "status", "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["published"] == SAMPLE_PHOTOS + 3 and status["units_done"] == 2
    by = {c["client"]: (c["published"], c["units_done"]) for c in status["clients"]}
    assert by.pop("beta") == (3, 1) and list(by.values()) == [(SAMPLE_PHOTOS, 1)]
    assert all(r.shard_path for r in _rows(store))  # the second run kept the dataset's layout
    text = _ops(store, "status").stdout
    assert f"items: {SAMPLE_PHOTOS + 3} published" in text and "beta" in text
    assert f"index: {STEPS + 1} index files not yet compacted" in text  # a step each, not the tars
