"""What the public Hub protocol leaves open, done both ways by the emulator, must publish the same.

- A commit planned at an old state may delete a path a later commit already removed: the protocol
  names 412 for a stale parent and 404 for deleting a missing path but not which the Hub checks first.
- Which files go through LFS is the server's choice (patterns, size): a commit whose outcome was
  unknown must be recognised as landed when its small coordination files were stored as LFS too.
- paths-info may or may not list folders, so a predecessor's ``unsplash/`` folder is found either way.
- Two clients may create one repo at once: the loser's 409 need not name the repo (the client reads
  ``url`` from it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.hub import HubEmulator, HubFaults, ManualClock, make_items
from sharp_dataset_pipeline.records import Batch, Unit
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore

REPO = "tester/splats"


@pytest.fixture(params=[False, True], ids=["parent-first", "deletes-first"])
def hub(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[HubEmulator]:
    with HubEmulator(clock=clock, faults=HubFaults(deletes_before_parent=request.param)) as emulator:
        yield emulator


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _store(hub: HubEmulator, clock: ManualClock, tmp_path: Path, client_id: str, layout: str) -> HubStore:
    # A long state age: the client plans on its cached state, as a busy publisher does.
    store = HubStore(HubOptions(REPO, endpoint=hub.url, token="hf_testtokenforthestore", client_id=client_id,
                                layout=layout, cache_dir=tmp_path / f"cache-{client_id}", retry_base_s=0.5,
                                state_max_age_s=1e9),
                     clock=clock, sleep=clock.sleep)
    store.open()
    return store


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_a_publish_whose_lease_an_operator_collected_still_lands_once(
    hub: HubEmulator, clock: ManualClock, tmp_path: Path, layout: str
) -> None:
    worker = _store(hub, clock, tmp_path, "worker", layout)
    operator = _store(hub, clock, tmp_path, "ops", layout)
    assert worker.acquire(Unit("u1", 0, 2), "worker", 60.0) is not None
    clock.advance(120)  # the worker's lease expires, and gc deletes it behind the worker's cached state
    assert len(operator.admin().gc(clock()).expired) == 1

    receipt = worker.publish(Batch("worker", items=make_items(tmp_path / "items", ["i1", "i2"], unit="u1"),
                                   units_done=["u1"]))

    assert sorted(receipt.published_ids) == ["i1", "i2"]
    fresh = _store(hub, clock, tmp_path, "reader", layout)
    assert sorted(row.id for row in fresh.admin().rows()) == ["i1", "i2"]
    assert fresh.unit_status(["u1"])["u1"].done
    if hub.faults.deletes_before_parent:
        assert hub.stats["commit_404_delete"] >= 1  # the order this test is about was exercised


@pytest.mark.parametrize("with_url", [True, False], ids=["409-names-the-repo", "409-without-url"])
def test_a_repo_another_client_just_created_is_opened_and_published_to(
    hub: HubEmulator, clock: ManualClock, tmp_path: Path, with_url: bool
) -> None:
    first = _store(hub, clock, tmp_path, "first", "shards")
    # The second client's repo-info read does not see the repo yet, so it tries to create it: 409.
    hub.faults.repo_info_misses, hub.faults.create_409_without_url = 1, not with_url
    second = _store(hub, clock, tmp_path, "second", "shards")
    assert hub.faults.repo_info_misses == 0

    receipt = second.publish(Batch("second", items=make_items(tmp_path / "items", ["i1"], unit="u1")))

    assert receipt.published_ids == ["i1"]
    assert [row.id for row in first.admin().rows()] == ["i1"]


@pytest.mark.parametrize("layout", ["files", "shards"])
def test_a_hub_whose_404s_carry_no_error_code_is_created_published_to_and_read(
    clock: ManualClock, tmp_path: Path, layout: str
) -> None:
    with HubEmulator(clock=clock, faults=HubFaults(bare_404=True)) as bare:
        writer = _store(bare, clock, tmp_path, "writer", layout)  # repo info 404 (no code): the repo is created
        assert bare.stats["repos_created"] == 1
        receipt = writer.publish(Batch("writer", items=make_items(tmp_path / "items", ["i1", "i2"], unit="u1"),
                                       units_done=["u1"]))
        assert sorted(receipt.published_ids) == ["i1", "i2"]
        writer.compact()
        reader = _store(bare, clock, tmp_path, "reader", layout)  # folders listed before they exist: 404s
        assert sorted(row.id for row in reader.admin().rows()) == ["i1", "i2"]
        assert reader.unit_status(["u1"])["u1"].done


@pytest.mark.parametrize("script", [["500-after"], ["drop-after"]])
def test_a_landed_commit_is_recognised_when_the_server_stored_every_file_through_lfs(
    clock: ManualClock, tmp_path: Path, script: list
) -> None:
    everything_lfs = b"* filter=lfs diff=lfs merge=lfs -text\n"
    with HubEmulator(clock=clock, gitattributes=everything_lfs) as hub:
        store = _store(hub, clock, tmp_path, "c1", "files")
        hub.set_faults(HubFaults(script=list(script)))  # the commit lands, then the answer is lost
        assert store.publish(Batch("c1", items=make_items(tmp_path / "a", ["a", "b"]))).published_ids == ["a", "b"]
        assert store.publish(Batch("c1", items=make_items(tmp_path / "b", ["b", "c"]))).published_ids == ["c"]
        repo = hub.repo(REPO)
        stored = {p: oid in hub.lfs_keys for p, oid in repo.commits[repo.head].files.items() if p != ".gitattributes"}
        assert stored and all(stored.values())  # the index and the coordination files too
        reader = _store(hub, clock, tmp_path, "reader", "files")
        assert sorted(row.id for row in reader.admin().rows()) == ["a", "b", "c"]


@pytest.mark.parametrize("folders", [True, False], ids=["paths-info-lists-folders", "files-only"])
def test_a_predecessor_dataset_is_recognised_whatever_paths_info_lists(
    clock: ManualClock, tmp_path: Path, folders: bool
) -> None:
    from huggingface_hub import HfApi

    with HubEmulator(clock=clock, faults=HubFaults(paths_info_folders=folders)) as hub:
        api = HfApi(endpoint=hub.url, token="hf_testtokenforthestore")
        api.create_repo(REPO, repo_type="dataset")
        api.upload_file(path_or_fileobj=b"ply\n", path_in_repo="unsplash/abc/abc.ply", repo_id=REPO,
                        repo_type="dataset")
        store = HubStore(HubOptions(REPO, endpoint=hub.url, token="hf_testtokenforthestore", client_id="p",
                                    cache_dir=tmp_path / "p"), clock=clock, sleep=clock.sleep)
        store.open()  # no layout asked for: a new dataset would be sharded, the predecessor's stays files
        assert store.layout == "files"


def test_an_upload_to_a_hub_without_xet_storage_says_how_to_use_git_lfs(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("hf_xet")
    from huggingface_hub import constants

    from sharp_dataset_pipeline.errors import StoreError

    with HubEmulator(clock=clock, gitattributes=b"*.tar filter=lfs diff=lfs merge=lfs -text\n") as hub:
        store = _store(hub, clock, tmp_path, "c1", "shards")
        items = make_items(tmp_path / "items", ["i1"], unit="u1")
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)  # as on a machine that did not set it
        with pytest.raises(StoreError, match="HF_HUB_DISABLE_XET=1"):
            store.publish(Batch("c1", items=items))
        assert [row.id for row in store.admin().rows()] == []
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        assert store.publish(Batch("c1", items=items)).published_ids == ["i1"]  # the same batch, through LFS
