"""``stores.hub_push`` and ``ops.push`` in process, on the loopback Hub with a shared fake clock: the
commit budget (``HF_COMMITS_PER_HOUR``) holds for a push too. The CLI is tested in
``tests/e2e/test_push_e2e.py``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from e2e.e2e_utils import run_cli
from emulators.hub import HubEmulator, ManualClock, index_rows
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES
from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.ops.push import PushOptions, push_dataset
from sharp_dataset_pipeline.publish.index import row_to_json
from sharp_dataset_pipeline.publish.transfer_plan import RowRef
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore
from sharp_dataset_pipeline.stores.hub_push import HubPushTarget
from sharp_dataset_pipeline.stores.local_export import held_for_push, read_local_dataset

REPO = "me/pushed"
TOKEN = "hf_pushstoretoken0123456789"
HOUR = 3600.0


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled samples in the sharded layout, two per publish step (three tars)."""
    work = tmp_path_factory.mktemp("push_store_src")
    proc = run_cli(work, "run", "--source", "samples", "--predictor", "planar", "--planar-resolution", "32",
                   "--store", f"local:{work / 'store'}", "--batch-size", "2", "--progress", "none", LAYOUT="shards")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work / "store"


def _hub_store(hub: HubEmulator, clock: ManualClock, tmp: Path, **kw: object) -> HubStore:
    return HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id="pusher", cache_dir=tmp / "cache",
                               layout="shards", new_layout="shards", retry_base_s=0.5, **kw),
                    clock=clock, sleep=clock.sleep)


def test_a_push_keeps_under_the_commit_budget(tmp_path: Path, local_store: Path) -> None:
    clock = ManualClock()
    dataset = read_local_dataset(local_store)
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _hub_store(hub, clock, tmp_path, commits_per_hour=2)
        store.open()
        target = HubPushTarget(store, dataset.file, dataset.rows_of, tmp_path / "work", clock)
        report = push_dataset(dataset, target, PushOptions(step_files=1), target_name=f"hf:{REPO}",
                              compact=store.compact)
        store.close()
        assert report.published == len(dataset.refs) == 6 and report.commits_landed == 3
        # The plan held refs only; each commit read its full rows: they land at the target as they are here.
        local = {r.id: json.loads(row_to_json(r)) for r in dataset.rows_of([r.id for r in dataset.refs])}
        assert {r["id"]: r for r in index_rows(hub.files(REPO))} == local
        assert all(r["members"] and r["image_sha256"] and r["processed_at"] for r in local.values())
        applied = hub.repo(REPO).applied_at  # card, three push steps, the compaction
        assert len(applied) == 5
        for t in applied:
            assert sum(1 for u in applied if t <= u < t + HOUR) <= 2, "more than 2 commits in an hour"
        assert applied[-1] - applied[0] >= 2 * HOUR  # five commits at two an hour: two hours of waiting


def test_the_source_keeps_refs_and_reads_full_rows_by_id(local_store: Path) -> None:
    dataset = read_local_dataset(local_store)
    assert len(dataset.refs) == 6 and all(isinstance(r, RowRef) and r.shards and r.size > 0 for r in dataset.refs)
    ids = [r.id for r in reversed(dataset.refs)]
    rows = dataset.rows_of(ids)
    assert [r.id for r in rows] == ids  # in the order asked
    assert all(r.shard_path in ref.shards for r, ref in zip(rows, reversed(dataset.refs), strict=True))
    with pytest.raises(StoreError, match="no longer has 1 of the rows"):
        dataset.rows_of([ids[0], "not-an-id"])


def test_local_removals_go_along_and_the_target_never_publishes_them(tmp_path: Path, local_store: Path) -> None:
    source = tmp_path / "store"
    shutil.copytree(local_store, source)
    gone = sorted(r.id for r in read_local_dataset(source).refs)[0]
    proc = run_cli(tmp_path, "remove", gone, "--reason", "takedown request", "--store", f"local:{source}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dataset = read_local_dataset(source)
    assert gone not in {r.id for r in dataset.refs} and dict(dataset.removed) == {gone: "takedown request"}
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _hub_store(hub, clock, tmp_path)
        store.open()
        target = HubPushTarget(store, dataset.file, dataset.rows_of, tmp_path / "work", clock)
        report = push_dataset(dataset, target, PushOptions(step_files=1), target_name=f"hf:{REPO}")
        assert report.published == 5 and report.removed == 1
        assert gone not in {r["id"] for r in index_rows(hub.files(REPO))}
        # The target knows it was removed: a run there would never publish it, whatever it is asked.
        assert store.item_states([gone])[gone].excluded
        failed = {f.item_id: f for f in store.admin().failed_items()}
        assert gone not in failed  # a removal, not a failure
        again = push_dataset(dataset, target, PushOptions(step_files=1), target_name=f"hf:{REPO}")
        assert again.removed == 0 and again.commits_landed == 0  # recorded once
        store.close()


def test_plys_go_in_their_own_tars_and_the_card_gets_their_config(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "run", "--source", "samples", "--predictor", "planar", "--planar-resolution", "32",
                   "--store", f"local:{tmp_path / 'store'}", "--batch-size", "3", "--progress", "none",
                   LAYOUT="shards", PUBLISH_FORMATS="spz,preview,ply")
    assert proc.returncode == 0, proc.stderr[-3000:]
    dataset = read_local_dataset(tmp_path / "store")
    assert all(r.ply_shard_path for r in dataset.rows_of([r.id for r in dataset.refs]))
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _hub_store(hub, clock, tmp_path)
        store.open()
        assert b"config_name: ply" not in hub.files(REPO)["README.md"]
        target = HubPushTarget(store, dataset.file, dataset.rows_of, tmp_path / "work", clock)
        report = push_dataset(dataset, target, PushOptions(step_files=2), target_name=f"hf:{REPO}")
        files = hub.files(REPO)
        plys = sorted(p for p in files if p.startswith("data/ply/"))
        assert report.published == 6 and report.commits_landed == 2 and len(plys) == 2
        for path in plys:  # each PLY tar travelled with the splat tar of the same rows, byte for byte
            assert files[path] == dataset.file(path).read_bytes()
        assert b"config_name: ply" in files["README.md"] and b"planar" in files["README.md"]
        assert store.admin().verify(clock(), deep=True).problems == []
        store.close()


class _RemoveMidway:
    """Progress that tries a local ``remove`` once the first commit landed (it must be refused)."""

    def __init__(self, cwd: Path, store: Path, item_id: str) -> None:
        self.cwd, self.store, self.item_id = cwd, store, item_id
        self.tried: list[tuple[int, str]] = []

    def planned(self, commits: int, items: int, size: int) -> None:
        return None

    def landed(self, outcome: object) -> None:
        if not self.tried:
            proc = run_cli(self.cwd, "remove", self.item_id, "--store", f"local:{self.store}")
            self.tried.append((proc.returncode, proc.stderr))


def test_a_local_remove_waits_until_the_push_is_over(tmp_path: Path, local_store: Path) -> None:
    """A ``remove`` rewrites tars in place: while a push sends them it is refused, so the tars sent
    are the ones the pushed rows describe; once the push is over it works."""
    source = tmp_path / "store"
    shutil.copytree(local_store, source)
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _hub_store(hub, clock, tmp_path)
        store.open()
        with held_for_push(source, clock()) as dataset:
            victim = sorted(r.id for r in dataset.refs)[-1]
            midway = _RemoveMidway(tmp_path, source, victim)
            target = HubPushTarget(store, dataset.file, dataset.rows_of, tmp_path / "work", clock)
            report = push_dataset(dataset, target, PushOptions(step_files=1), target_name=f"hf:{REPO}",
                                  progress=midway)
        assert report.published == 6 and len(midway.tried) == 1
        code, err = midway.tried[0]
        assert code == 1 and "is compacting or repairing this store" in err, err[-2000:]
        assert victim in {r.id for r in read_local_dataset(source).refs}  # nothing was removed meanwhile
        files = hub.files(REPO)
        for path in (p for p in files if p.endswith(".tar")):
            assert files[path] == dataset.file(path).read_bytes()
        assert store.admin().verify(clock(), deep=True).problems == []
        store.close()
    after = run_cli(tmp_path, "remove", victim, "--store", f"local:{source}")
    assert after.returncode == 0, after.stderr[-2000:]
