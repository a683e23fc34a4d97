"""verify / verify --fix / remove / gc against local stores made by the real pipeline, damaged on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.e2e_utils import check_consistent, cli_env, read_rows, run_cli
from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.records import Lease, Unit
from sharp_dataset_pipeline.stores import local_schema as sql
from sharp_dataset_pipeline.stores.local import LocalStore
from sharp_dataset_pipeline.stores.local_remove import exclusions, gc_local, remove_local
from sharp_dataset_pipeline.stores.local_verify import fix_local, verify_local

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

INDEX = "data/train.jsonl"


def _verify(store: Path, now: float = 2e9, deep: bool = False):
    """verify_local without the settling pause (nothing publishes into these stores meanwhile)."""
    return verify_local(store, INDEX, "local:store", now=now, deep=deep, settle_s=0.0)


def _kinds(report) -> dict[str, int]:
    return report.counts()


def _shards(store: Path) -> list[Path]:
    return sorted((store / "data").glob("train-shard-*.jsonl"))


def _put_lease(store: Path, lease: Lease) -> None:
    conn = sql.connect(store / ".coord" / "ledger.sqlite3")
    try:
        with sql.write_tx(conn):
            sql.put_lease(conn, lease)
    finally:
        conn.close()


def _lease_units(store: Path) -> set[str]:
    conn = sql.connect(store / ".coord" / "ledger.sqlite3")
    try:
        return {r[0] for r in conn.execute("SELECT unit FROM leases")}
    finally:
        conn.close()


def _damage(store: Path) -> dict[str, str]:
    """Missing file, size change, silent content change, orphan files, duplicate row, stale lease."""
    rows = read_rows(store)
    assert len(rows) == 6
    (store / rows[0]["ply_path"]).unlink()
    img = store / rows[1]["image_path"]
    img.write_bytes(img.read_bytes() + b"extra")
    ply = store / rows[2]["ply_path"]
    data = bytearray(ply.read_bytes())
    data[-1] ^= 0xFF  # same size, different content: only a deep check sees it
    ply.write_bytes(bytes(data))
    (store / "folder" / "zz0000orphan0000").mkdir(parents=True)
    (store / "folder" / "zz0000orphan0000" / "zz0000orphan0000.ply").write_bytes(b"ply\n")
    (store / rows[3]["image_path"]).with_name("stray.txt").write_text("left behind")
    shards = _shards(store)
    first_line = shards[0].read_text().splitlines()[0]
    with shards[1].open("a") as fh:
        fh.write(first_line + "\n")
    stale = LocalStore(store, clock=lambda: 1000.0)
    stale.open()
    assert stale.acquire(Unit("folder/ghost/000000-000005", 0, 6), "ghost", 60.0) is not None
    stale.close()
    return {"missing": rows[0]["id"], "resized": rows[1]["id"], "altered": rows[2]["id"],
            "dup": json.loads(first_line)["id"]}


def test_clean_store_is_consistent(workspace: Path) -> None:
    report = _verify(workspace / "store", deep=True)
    assert report.ok, report.text()
    on_disk = [p for p in (workspace / "store" / "folder").rglob("*") if p.is_file()]
    assert report.rows == 6 and report.files == len(on_disk) >= 12


def test_verify_finds_each_damage_and_fix_repairs_the_safe_ones(workspace: Path) -> None:
    store = workspace / "store"
    ids = _damage(store)
    shallow = _verify(store)
    assert _kinds(shallow) == {"duplicate_row": 2, "expired_lease": 1, "missing_file": 1, "orphan_file": 2,
                               "size_mismatch": 1}
    deep = _verify(store, deep=True)
    assert _kinds(deep)["hash_mismatch"] == 1
    assert {p.subject for p in deep.problems if p.kind == "hash_mismatch"} == {ids["altered"]}
    assert {p.subject for p in deep.problems if p.kind == "duplicate_row"} == {ids["dup"]}

    fixed = fix_local(store, INDEX, deep, now=2e9)
    assert {p.kind for p in fixed} == {"duplicate_row", "expired_lease", "orphan_file"}
    assert not (store / "folder" / "zz0000orphan0000").exists()
    ids_in_index = [r["id"] for r in read_rows(store)]
    assert len(ids_in_index) == len(set(ids_in_index)) == 6
    assert _lease_units(store) == set()
    after = _verify(store, deep=True)
    assert _kinds(after) == {"hash_mismatch": 1, "missing_file": 1, "size_mismatch": 1}
    assert not any(p.fixable for p in after.problems)

    remove_local(store, INDEX, [ids["missing"], ids["resized"], ids["altered"]], "damaged", now=2e9)
    final = _verify(store, deep=True)
    assert final.ok, final.text()
    assert len(check_consistent(store)) == 3


def test_verify_cli_exit_codes_and_fix(workspace: Path, run_ops) -> None:
    clean = run_ops(workspace, "verify", "--store", "local:store", "--deep")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "consistent" in clean.stdout
    _damage(workspace / "store")
    bad = run_ops(workspace, "verify", "--store", "local:store", "--json")
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert not doc["ok"] and doc["counts"]["orphan_file"] == 2 and doc["counts"]["expired_lease"] == 1
    refused = run_ops(workspace, "verify", "--store", "local:store", "--fix")  # no terminal, no --yes
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    assert (workspace / "store" / "folder" / "zz0000orphan0000" / "zz0000orphan0000.ply").is_file()
    fixing = run_ops(workspace, "verify", "--store", "local:store", "--fix", "--yes")
    assert fixing.returncode == 1  # the missing and resized files cannot be repaired
    assert "fixed 5 problems" in fixing.stdout and "missing_file" in fixing.stdout
    missing = run_ops(workspace, "verify", "--store", "local:nowhere")
    assert missing.returncode == 1 and "no local store" in missing.stderr


def test_verify_fix_dry_run_lists_what_fix_would_do_and_changes_nothing(workspace: Path, run_ops) -> None:
    store = workspace / "store"
    ids = _damage(store)
    before = _kinds(_verify(store))
    dry = run_ops(workspace, "verify", "--store", "local:store", "--fix", "--dry-run")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    out = dry.stdout
    assert "--fix would delete folder/zz0000orphan0000/zz0000orphan0000.ply" in out
    assert "--fix would delete the lease on unit folder/ghost/000000-000005" in out
    assert "--fix would regenerate index file" in out
    assert "dry run: --fix would repair 5 of them; nothing was changed" in out
    # Each problem --fix cannot repair says what it needs.
    missing = read_rows(store)[0]["ply_path"]
    assert f"needs: restore {missing}" in out and f"`sharp-dataset remove {ids['missing']}`" in out
    assert out.count("needs: ") == 2  # missing_file, size_mismatch
    # Nothing changed.
    assert (store / "folder" / "zz0000orphan0000" / "zz0000orphan0000.ply").is_file()
    assert _lease_units(store) == {"folder/ghost/000000-000005"}
    assert _kinds(_verify(store)) == before
    doc = json.loads(run_ops(workspace, "verify", "--store", "local:store", "--fix", "--dry-run", "--json").stdout)
    assert doc["dry_run"] and not doc["fixed"]
    by_kind = {p["kind"]: p for p in doc["problems"]}
    assert by_kind["orphan_file"]["fix"].startswith("delete ") and not by_kind["orphan_file"]["needs"]
    assert by_kind["size_mismatch"]["needs"] and not by_kind["size_mismatch"]["fix"]
    alone = run_ops(workspace, "verify", "--store", "local:store", "--dry-run")
    assert alone.returncode == 2 and "--dry-run goes with --fix" in alone.stderr


def _on_a_terminal(cwd: Path, answer: str, *args: str) -> tuple[int, str]:
    """Runs the real command with a pseudo-terminal as stdin, typing ``answer``; (exit code, output)."""
    primary, secondary = os.openpty()
    try:
        os.write(primary, answer.encode() + b"\n")
        done = subprocess.run([sys.executable, "-m", "sharp_dataset_pipeline.ops_cli", *args], cwd=cwd,
                              env=cli_env(), stdin=secondary, capture_output=True, text=True, timeout=300)
    finally:
        os.close(primary)
        os.close(secondary)
    return done.returncode, done.stdout + done.stderr


def test_verify_fix_on_a_terminal_lists_what_it_would_do_and_asks_first(workspace: Path) -> None:
    store = workspace / "store"
    _damage(store)
    orphan = store / "folder" / "zz0000orphan0000" / "zz0000orphan0000.ply"
    code, out = _on_a_terminal(workspace, "n", "verify", "--store", "local:store", "--fix")
    assert code == 1 and "nothing was changed" in out
    assert "--fix would delete folder/zz0000orphan0000/zz0000orphan0000.ply" in out
    assert "apply these repairs? [y/N]" in out
    assert orphan.is_file() and _lease_units(store) == {"folder/ghost/000000-000005"}
    code, out = _on_a_terminal(workspace, "y", "verify", "--store", "local:store", "--fix")
    assert code == 1  # the missing and resized files cannot be repaired
    assert "fixed 5 problems" in out and not orphan.exists() and _lease_units(store) == set()


def test_interrupted_takedown_is_finished_by_fix(workspace: Path) -> None:
    """An exclusion recorded without the rest (rows, files) is reported, and --fix completes it."""
    store = workspace / "store"
    victim = read_rows(store)[0]
    local = LocalStore(store)
    local.open()
    local.exclude([victim["id"]], "test")
    local.close()
    report = _verify(store)
    victim_files = len(list((store / victim["ply_path"]).parent.iterdir()))
    # The row still shows in its JSONL file and in that file's typed twin (the files layout's Parquet index).
    assert _kinds(report) == {"orphan_file": victim_files, "unrecorded_row": 1, "index_mismatch": 1}
    fix_local(store, INDEX, report, now=2e9)
    assert _verify(store).ok
    assert victim["id"] not in {r["id"] for r in read_rows(store)}
    assert not (store / victim["ply_path"]).exists()


def test_remove_takes_an_item_down_everywhere_and_a_rerun_does_not_bring_it_back(workspace: Path, run_ops) -> None:
    store = workspace / "store"
    victim = read_rows(store)[2]
    out = run_ops(workspace, "remove", victim["id"], "--store", "local:store", "--reason", "author asked")
    assert out.returncode == 0, out.stderr
    assert "removed 1 items" in out.stdout
    assert victim["id"] not in {r["id"] for r in read_rows(store)}
    assert not (store / victim["image_path"]).exists() and not (store / victim["ply_path"]).exists()
    assert not (store / victim["ply_path"]).parent.exists()
    assert [(i, r) for i, r, _ in exclusions(store)] == [(victim["id"], "author asked")]
    assert "Removal requests" in (store / "README.md").read_text()
    status = json.loads(run_ops(workspace, "status", "--store", "local:store", "--json").stdout)
    assert status["published"] == 5 and status["excluded"] == 1

    # New unit keys (another range size) make the source enumerate every photo again.
    rerun = run_cli(workspace, "run", "--source", "folder:photos", "--predictor", "planar", "--store",
                    "local:store", "--run-id", "R2", "--client-id", "beta", "--planar-resolution", "48",
                    "--range-size", "2", "--summary-json", "r2.json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((workspace / "r2.json").read_text())
    assert summary["published"] == 0
    assert summary["skipped"].get("removed") == 1
    rows = check_consistent(store)
    assert victim["id"] not in {r["id"] for r in rows} and len(rows) == 5
    again = run_ops(workspace, "remove", victim["id"], "--store", "local:store")
    assert again.returncode == 0 and "removed before" in again.stdout


def test_remove_refuses_unknown_ids_without_force_and_dry_run_changes_nothing(workspace: Path, run_ops) -> None:
    store = workspace / "store"
    rows = read_rows(store)
    victim = rows[1]
    refused = run_ops(workspace, "remove", victim["id"], "typo0000id", "--store", "local:store")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "never published: typo0000id" in refused.stderr and "--force" in refused.stderr
    assert exclusions(store) == [] and len(read_rows(store)) == 6  # nothing changed, not even the real id

    dry = run_ops(workspace, "remove", victim["id"], "--store", "local:store", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: remove would take down 1 items, delete 3 files and rewrite 1 index files" in dry.stdout
    for kind in ("image", "ply"):
        assert f"delete {victim[f'{kind}_path']}" in dry.stdout
        assert (store / victim[f"{kind}_path"]).is_file()
    assert exclusions(store) == [] and len(read_rows(store)) == 6

    forced = run_ops(workspace, "remove", victim["id"], "typo0000id", "--store", "local:store", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "removed 1 items" in forced.stdout and "excluded 1 ids that were not published" in forced.stdout
    assert sorted(i for i, _, _ in exclusions(store)) == sorted([victim["id"], "typo0000id"])
    assert not (store / victim["ply_path"]).exists() and len(check_consistent(store)) == 5


def test_remove_from_the_compacted_index(workspace: Path) -> None:
    store = workspace / "store"
    local = LocalStore(store)
    local.open()
    assert local.compact() == 6
    local.close()
    assert not _shards(store)
    victim = read_rows(store)[4]["id"]
    result = remove_local(store, INDEX, [victim, "neverseen01"], "test", now=2e9)
    assert result.removed == [victim] and result.blocked == ["neverseen01"]
    assert result.index_files_rewritten == ["train.jsonl"]
    assert victim not in {r["id"] for r in read_rows(store)}
    assert _verify(store).ok
    local.open()
    states = local.item_states([victim, "neverseen01"])
    assert states[victim].excluded and not states[victim].published and states["neverseen01"].excluded
    assert local.compact() == 5
    local.close()


def test_gc_removes_expired_and_pointless_leases_only(workspace: Path, run_ops) -> None:
    store = workspace / "store"
    done_unit = read_rows(store)[0]["unit"]
    _put_lease(store, Lease("folder/x/000000-000001", "gone", "n1", 100.0, 200.0))
    _put_lease(store, Lease(done_unit, "late", "n2", 100.0, 5e9))
    _put_lease(store, Lease("folder/x/000002-000003", "live", "n3", 1.0e9, 3.0e9))
    result = gc_local(store, now=2e9)
    assert [le.owner for le in result.expired] == ["gone"]
    assert [le.owner for le in result.on_done_units] == ["late"]
    assert _lease_units(store) == {"folder/x/000002-000003"}
    cli = run_ops(workspace, "gc", "--store", "local:store")
    assert cli.returncode == 0 and "removed 0 expired leases" in cli.stdout
    assert _lease_units(store) == {"folder/x/000002-000003"}


def test_fix_while_a_client_publishes_never_touches_its_work(tmp_path: Path) -> None:
    """verify --fix run over and over during a real run: the finished store is still consistent."""
    import subprocess
    import sys
    import time

    from e2e.e2e_utils import cli_env, make_photos

    make_photos(tmp_path / "photos", 24, seed=3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sharp_dataset_pipeline.cli", "run", "--source", "folder:photos", "--predictor",
         "planar", "--store", "local:store", "--run-id", "C", "--client-id", "busy", "--planar-resolution", "48",
         "--batch-size", "2", "--range-size", "4"], cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    store = tmp_path / "store"
    rounds = 0
    try:
        while proc.poll() is None:
            try:
                report = verify_local(store, INDEX, "local:store", now=time.time(), settle_s=0.05)
            except StoreError:  # the run has not created its store yet
                continue
            fix_local(store, INDEX, report, now=time.time())
            rounds += 1
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert rounds > 0, rounds
    assert len(check_consistent(store)) == 24
    assert _verify(store, now=time.time(), deep=True).ok


def test_status_counters_are_checked_and_repaired_by_verify(workspace: Path) -> None:
    """status sums per-publish-step row counts; verify catches (and --fix repairs) a wrong one."""
    from sharp_dataset_pipeline.ops.status import dataset_status

    store = workspace / "store"
    conn = sql.connect(store / ".coord" / "ledger.sqlite3")
    with sql.write_tx(conn):
        name = conn.execute("SELECT name FROM shards ORDER BY name LIMIT 1").fetchone()[0]
        conn.execute("UPDATE shards SET rows = rows + 5 WHERE name = ?", (name,))
    conn.close()
    assert dataset_status(LocalStore(store).admin(), now=2e9).published == 11
    report = _verify(store)
    assert [(p.kind, p.subject) for p in report.problems] == [("shard_count", name)]
    fix_local(store, INDEX, report, now=2e9)
    assert _verify(store).ok
    assert dataset_status(LocalStore(store).admin(), now=2e9).published == 6
