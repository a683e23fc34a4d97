"""status / verify --fix / remove / gc / gallery on a Hub store, through the real CLI and the real
``huggingface_hub`` client against the loopback Hub.

A real pipeline run (folder source, planar predictor) fills a template repo once; each test works
on its own copy of that repo inside the emulator and damages it on purpose.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import pytest

from e2e.e2e_utils import make_photos, run_cli
from emulators.hub import HubEmulator, HubFaults, Repo, index_rows, make_items
from sharp_dataset_pipeline.ledger.leases import encode_lease
from sharp_dataset_pipeline.publish import layout
from sharp_dataset_pipeline.records import Batch, Failure, Lease, Unit
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

TEMPLATE = "ops/template"
TOKEN = "hf_opscanarytoken0123456789"
PHOTOS = 6
_names = count()


@pytest.fixture(scope="module")
def hub() -> Iterator[HubEmulator]:
    with HubEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def template(hub: HubEmulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with ``photos/`` whose 6 photos a real run published into ``TEMPLATE``."""
    work = tmp_path_factory.mktemp("hub_ops")
    make_photos(work / "photos", PHOTOS, seed=7)
    proc = _cli(work, hub, "run", "--source", "folder:photos", "--predictor", "planar", "--store", f"hf:{TEMPLATE}",
                "--run-id", "R1", "--client-id", "alpha", "--planar-resolution", "48", "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(index_rows(hub.files(TEMPLATE))) == PHOTOS
    return work


@pytest.fixture
def repo(hub: HubEmulator, template: Path) -> str:
    """A private copy of the template repo (same commits, same files), for one test to damage."""
    name = f"ops/copy{next(_names)}"
    src = hub.repo(TEMPLATE)
    hub.repos[("dataset", name)] = Repo("dataset", name, src.private, commits=dict(src.commits),
                                        order=list(src.order), head=src.head)
    return name


@pytest.fixture
def store(hub: HubEmulator, repo: str, tmp_path: Path) -> Callable[..., HubStore]:
    """Builder of in-process stores on the test's repo (``shift``: their clock runs that far behind)."""

    def build(client: str, shift: float = 0.0, **kw) -> HubStore:
        made = HubStore(HubOptions(repo, layout="files", endpoint=hub.url, token=TOKEN, client_id=client,
                                   cache_dir=tmp_path / f"cache-{client}-{next(_names)}", state_max_age_s=0.0, **kw),
                        clock=lambda: time.time() - shift, sleep=lambda s: None)
        made.open()
        return made

    return build


def _cli(cwd: Path, hub: HubEmulator, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cwd, *args, CLIENT_ID="ops-tester", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN,
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1", LAYOUT="files")


def _api(hub: HubEmulator):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=TOKEN)


def _lease_files(hub: HubEmulator, repo: str) -> dict[str, dict]:
    return {p: json.loads(v) for p, v in hub.files(repo).items() if p.startswith(".coord/leases/")}


def _add_leases(store: Callable[..., HubStore]) -> None:
    """beta holds a valid lease; gamma's lease expired an hour ago."""
    beta = store("beta")
    assert beta.acquire(Unit("folder/other/000000-000299", 0, 300), "beta", 600.0) is not None
    beta.close()
    gamma = store("gamma", shift=7200)
    assert gamma.acquire(Unit("folder/other/000300-000599", 300, 600), "gamma", 60.0) is not None
    gamma.close()


def test_status_shows_counts_clients_leases_and_reads_no_item_file(hub: HubEmulator, repo: str, template: Path,
                                                                   store: Callable[..., HubStore]) -> None:
    _add_leases(store)
    failing = store("beta")
    failing.record_failures([Failure("bad1", "folder/other/000000-000299", "fetch", "decode", "broken", False)],
                            "beta")
    failing.close()  # buffered failures go out in one commit at close
    files = hub.files(repo)
    coordination = [p for p in files if p.startswith(("data/", ".coord/")) and not p.startswith(".coord/progress/")]
    commits, stats = len(hub.history(repo)), dict(hub.stats)

    proc = _cli(template, hub, "status", "--store", f"hf:{repo}", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert (report["published"], report["failed"], report["excluded"]) == (6, {"decode": 1}, 0)
    assert (report["units_done"], report["units_leased"], report["units_expired_leases"]) == (1, 1, 1)
    clients = {c["client"]: c for c in report["clients"]}
    alpha = clients["alpha"]
    assert (alpha["published"], alpha["units_done"]) == (6, 1)
    # Items per hour over the window since the run's first item, not 6 spread over an hour.
    assert 0 < alpha["window_last_hour_s"] < 3600
    assert alpha["rate_last_hour"] == pytest.approx(5 * 3600 / alpha["window_last_hour_s"])
    assert (clients["beta"]["leases_active"], clients["gamma"]["leases_expired"]) == (1, 1)
    assert report["shards_pending"] == 2 and report["budgets"]["commits_last_hour"] == 0  # status's own
    assert report["budgets"]["publish_commits_last_hour"] == 2  # the fleet's, from the ledger: two publish steps
    # Cheap: nothing committed, and at most the coordination files were downloaded (18 item files exist).
    assert len(hub.history(repo)) == commits
    assert hub.stats["downloads"] - stats.get("downloads", 0) <= len(coordination) < PHOTOS * 3

    text = _cli(template, hub, "status", "--store", f"hf:{repo}")
    assert text.returncode == 0, text.stderr[-3000:]
    assert "items: 6 published, 1 failed (decode: 1), 0 removed" in text.stdout
    assert all(name in text.stdout for name in ("alpha", "beta", "gamma", "expired"))
    assert TOKEN not in text.stdout + text.stderr + proc.stderr


def test_verify_finds_a_deleted_file_and_an_orphan_and_fix_repairs_the_orphan(
        hub: HubEmulator, repo: str, template: Path, store: Callable[..., HubStore]) -> None:
    _add_leases(store)
    files = hub.files(repo)
    rows = index_rows(files)
    api = _api(hub)
    victim = rows[0]["ply_path"]
    api.delete_file(victim, repo_id=repo, repo_type="dataset")
    top = rows[1]["image_path"].split("/")[0]
    orphan = f"{top}/orphan01/orphan01.jpg"
    api.upload_file(path_or_fileobj=b"no row points at me", path_in_repo=orphan, repo_id=repo, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a person's notes", path_in_repo="notes/notes.txt", repo_id=repo,
                    repo_type="dataset")  # not shaped like an item file: not the dataset's business
    changed = rows[2]["image_path"]
    same_size = bytearray(files[changed])
    same_size[-1] ^= 0xFF
    api.upload_file(path_or_fileobj=bytes(same_size), path_in_repo=changed, repo_id=repo, repo_type="dataset")

    proc = _cli(template, hub, "verify", "--store", f"hf:{repo}", "--json")
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["counts"] == {"expired_lease": 1, "missing_file": 1, "orphan_file": 1}
    assert {p["target"] for p in report["problems"]} >= {victim, orphan}
    deep = json.loads(_cli(template, hub, "verify", "--deep", "--store", f"hf:{repo}", "--json").stdout)
    assert [p["target"] for p in deep["problems"] if p["kind"] == "hash_mismatch"] == [changed]

    commits = len(hub.history(repo))
    fixed = _cli(template, hub, "verify", "--fix", "--yes", "--store", f"hf:{repo}", "--json")
    assert fixed.returncode == 1, fixed.stderr[-3000:]  # the deleted file cannot be repaired
    after = json.loads(fixed.stdout)
    assert sorted(p["kind"] for p in after["fixed"]) == ["expired_lease", "orphan_file"]
    assert after["counts"] == {"missing_file": 1}
    (left,) = after["problems"]
    assert left["needs"].startswith(f"restore {victim}") and not left["fixable"]
    assert len(hub.history(repo)) == commits + 1, "the repairs are one commit"
    files = hub.files(repo)
    assert orphan not in files and victim not in files and "notes/notes.txt" in files
    assert [v["owner"] for v in _lease_files(hub, repo).values()] == ["beta"]


def test_remove_takes_an_item_down_everywhere_and_nothing_brings_it_back(
        hub: HubEmulator, repo: str, template: Path, store: Callable[..., HubStore], tmp_path: Path) -> None:
    rows = index_rows(hub.files(repo))
    target = rows[0]["id"]
    commits = len(hub.history(repo))
    # An id that was never published is refused without --force (a typo would be excluded for ever).
    refused = _cli(template, hub, "remove", target, "neverpublished1", "--store", f"hf:{repo}")
    assert refused.returncode == 2 and "never published: neverpublished1" in refused.stderr
    assert "--force" in refused.stderr
    # --dry-run says what would happen and commits nothing.
    dry = _cli(template, hub, "remove", target, "neverpublished1", "--store", f"hf:{repo}", "--force", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "dry run: remove would take down 1 items, delete 3 files and rewrite 1 index files" in dry.stdout
    assert f"delete {rows[0]['ply_path']}" in dry.stdout and "would exclude 1 ids" in dry.stdout
    assert len(hub.history(repo)) == commits and target in {r["id"] for r in index_rows(hub.files(repo))}
    proc = _cli(template, hub, "remove", target, "neverpublished1", "--store", f"hf:{repo}",
                "--reason", "takedown request", "--force")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "removed 1 items (3 files deleted, 1 index files rewritten)" in proc.stdout
    assert "excluded 1 ids that were not published" in proc.stdout
    assert len(hub.history(repo)) == commits + 1, "files, index and exclusion land in one commit"
    files = hub.files(repo)
    assert not [p for p in files if f"/{target}/" in p]
    assert target not in {r["id"] for r in index_rows(files)} and len(index_rows(files)) == PHOTOS - 1
    removal = [p for p in files if p.startswith(".coord/batches/zz-removal-")]
    assert len(removal) == 1 and b"takedown request" in files[removal[0]]

    status = json.loads(_cli(template, hub, "status", "--store", f"hf:{repo}", "--json").stdout)
    assert (status["published"], status["excluded"], status["failed"]) == (PHOTOS - 1, 2, {})
    late = store("late")
    states = late.item_states([target, "neverpublished1", rows[1]["id"]])
    assert states[target].excluded and not states[target].published and states["neverpublished1"].excluded
    assert states[rows[1]["id"]].published and not states[rows[1]["id"]].excluded
    # A client that had the item in flight before the removal does not publish it again.
    receipt = late.publish(Batch("late", items=make_items(tmp_path / "late", [target], subdir="folder")))
    assert receipt.published_ids == []
    # The exclusion outlives compaction of the index and the ledger.
    assert late.compact() == PHOTOS - 1
    assert not [p for p in hub.files(repo) if p.startswith(".coord/batches/")]
    assert store("later").item_states([target])[target].excluded
    # A rerun with other units (so every photo is looked at again) skips the removed one.
    rerun = _cli(template, hub, "run", "--source", "folder:photos", "--predictor", "planar", "--store", f"hf:{repo}",
                 "--run-id", "R2", "--client-id", "beta", "--planar-resolution", "48", "--range-size", "3")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    ids = [r["id"] for r in index_rows(hub.files(repo))]
    assert target not in ids and len(ids) == PHOTOS - 1
    again = _cli(template, hub, "remove", target, "--store", f"hf:{repo}")
    assert again.returncode == 0 and "1 ids were removed before" in again.stdout


def test_gc_drops_expired_leases_and_leases_on_done_units_in_one_commit(
        hub: HubEmulator, repo: str, template: Path, store: Callable[..., HubStore]) -> None:
    _add_leases(store)
    done_unit = index_rows(hub.files(repo))[0]["unit"]
    pointless = Lease(done_unit, "delta", "n0", time.time(), time.time() + 3600)
    _api(hub).upload_file(path_or_fileobj=encode_lease(pointless), path_in_repo=layout.lease_path(done_unit),
                          repo_id=repo, repo_type="dataset")
    commits = len(hub.history(repo))
    proc = _cli(template, hub, "gc", "--store", f"hf:{repo}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "removed 1 expired leases and 1 leases on done units" in proc.stdout
    assert "gamma" in proc.stdout and "delta" in proc.stdout
    assert len(hub.history(repo)) == commits + 1
    assert [v["owner"] for v in _lease_files(hub, repo).values()] == ["beta"]
    quiet = _cli(template, hub, "gc", "--store", f"hf:{repo}")
    assert "removed 0 expired leases" in quiet.stdout and len(hub.history(repo)) == commits + 1


def test_gallery_builds_from_the_hub_store(hub: HubEmulator, repo: str, template: Path) -> None:
    proc = _cli(template, hub, "gallery", "--store", f"hf:{repo}", "--out", "site-hub", "--runs", "runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = template / "site-hub"
    ids = {r["id"] for r in index_rows(hub.files(repo))}
    assert f"gallery: {PHOTOS} items on 1 page" in proc.stdout and "skipped" not in proc.stdout
    assert {p.stem for p in (site / "items").glob("*.html")} == ids
    for item_id in ids:
        assert all((site / "media" / item_id / n).stat().st_size > 0 for n in ("photo.jpg", "preview.jpg", "splat.ply"))
    assert f"{PHOTOS} items published in 2 publish steps by 1 client" in (site / "report.html").read_text()


@pytest.mark.parametrize("script", [[412], ["500-after"], ["drop-after", 409]])
def test_remove_and_gc_follow_the_commit_rules(hub: HubEmulator, repo: str, store: Callable[..., HubStore],
                                               script: list) -> None:
    _add_leases(store)
    ops = store("ops", retry_base_s=0.01).admin()
    target = index_rows(hub.files(repo))[0]["id"]
    hub.set_faults(HubFaults(script=list(script)))
    try:
        result = ops.remove([target], "request", time.time())
        gc = ops.gc(time.time())
    finally:
        hub.set_faults(HubFaults())
    files = hub.files(repo)
    assert result.removed == [target] and target not in {r["id"] for r in index_rows(files)}
    assert len([p for p in files if p.startswith(".coord/batches/zz-removal-")]) == 1
    assert [le.owner for le in gc.expired] == ["gamma"]
    assert "gamma" not in {v["owner"] for v in _lease_files(hub, repo).values()}


def test_remove_rewrites_the_compacted_index_and_fix_survives_a_lost_answer(
        hub: HubEmulator, repo: str, store: Callable[..., HubStore]) -> None:
    hub_store = store("ops", retry_base_s=0.01)
    ops = hub_store.admin()
    assert hub_store.compact() == PHOTOS
    rows = index_rows(hub.files(repo))
    target, top = rows[3]["id"], rows[0]["image_path"].split("/")[0]
    result = ops.remove([target], "request", time.time())
    files = hub.files(repo)
    assert result.index_files_rewritten == ["data/train.jsonl"] and result.files_deleted
    assert [r["id"] for r in index_rows(files)] == [r["id"] for r in rows if r["id"] != target]
    orphan = f"{top}/stray/stray.ply"
    _api(hub).upload_file(path_or_fileobj=b"stray", path_in_repo=orphan, repo_id=repo, repo_type="dataset")
    report = ops.verify(time.time())
    assert [(p.kind, p.target) for p in report.problems] == [("orphan_file", orphan)]
    hub.set_faults(HubFaults(script=["500-after"]))  # applied, but the answer is an error
    try:
        fixed = ops.fix(report, time.time())
    finally:
        hub.set_faults(HubFaults())
    assert [p.target for p in fixed] == [orphan] and orphan not in hub.files(repo)
    assert ops.verify(time.time()).ok
    assert {r.id for r in ops.rows()} == {r["id"] for r in rows} - {target}
