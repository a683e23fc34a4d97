"""The loopback Hub speaks the protocol the real ``huggingface_hub`` client expects, faults included.

These drive the installed client (2.4) directly, so a wrong emulator fails here, not deep inside the
store tests.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError

from emulators.hub import HubEmulator, HubFaults, ManualClock

REPO = "tester/emu"


@pytest.fixture
def hub() -> HubEmulator:
    with HubEmulator() as emulator:
        yield emulator


def _api(hub: HubEmulator) -> HfApi:
    return HfApi(endpoint=hub.url, token="hf_emulatortesttoken000")


def _commit(api: HfApi, path: str, data: bytes, parent: str | None = None) -> str:
    return api.create_commit(REPO, [CommitOperationAdd(path, data)], commit_message=f"add {path}",
                             repo_type="dataset", parent_commit=parent).oid


def test_create_repo_is_private_and_idempotent(hub: HubEmulator) -> None:
    api = _api(hub)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(REPO, repo_type="dataset")
    url = api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)
    assert url.repo_id == REPO
    api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)  # 409 swallowed
    info = api.repo_info(REPO, repo_type="dataset")
    assert info.private is True and len(info.sha) == 40
    api.create_repo(REPO, private=False)  # a model repo of the same name is another repo
    assert hub.repo(REPO, "model").private is False


def test_parent_commit_is_a_compare_and_swap(hub: HubEmulator) -> None:
    api = _api(hub)
    api.create_repo(REPO, repo_type="dataset")
    base = api.repo_info(REPO, repo_type="dataset").sha
    first = _commit(api, "a.txt", b"one", parent=base)
    with pytest.raises(HfHubHTTPError) as err:
        _commit(api, "b.txt", b"two", parent=base)  # disjoint file, stale parent
    assert err.value.response.status_code == 412
    assert "updated since you opened" in (err.value.server_message or "")
    assert _commit(api, "b.txt", b"two", parent=first[:7]) != first  # a short sha is accepted


def test_identical_content_is_skipped_without_any_cas(hub: HubEmulator) -> None:
    """The client's no-op shortcut: why lease files must always carry a nonce."""
    api = _api(hub)
    api.create_repo(REPO, repo_type="dataset")
    base = api.repo_info(REPO, repo_type="dataset").sha
    head = _commit(api, "lock.json", b"same", parent=base)
    sent = hub.stats["commit_requests"]
    again = _commit(api, "lock.json", b"same", parent=base)  # stale parent, yet "success"
    assert again == head
    assert hub.stats["commit_requests"] == sent


def test_tree_pages_downloads_and_missing_entries(tmp_path: Path) -> None:
    with HubEmulator(tree_page_size=3) as hub:
        api = _api(hub)
        api.create_repo(REPO, repo_type="dataset")
        ops = [CommitOperationAdd(f"d/f{i}.txt", f"v{i}".encode()) for i in range(7)]
        sha = api.create_commit(REPO, ops, commit_message="many", repo_type="dataset").oid
        names = [e.path for e in api.list_repo_tree(REPO, "d", revision=sha, repo_type="dataset")]
        assert names == [f"d/f{i}.txt" for i in range(7)]
        assert hub.stats["tree_pages"] == 3
        nested = api.list_repo_tree(REPO, recursive=True, revision=sha, repo_type="dataset")
        assert {e.path for e in nested} >= {"d", "d/f6.txt", ".gitattributes"}
        with pytest.raises(RemoteEntryNotFoundError):
            list(api.list_repo_tree(REPO, "nope", revision=sha, repo_type="dataset"))
        later = _commit(api, "d/f0.txt", b"changed")
        old = api.hf_hub_download(REPO, "d/f0.txt", repo_type="dataset", revision=sha, cache_dir=tmp_path)
        new = api.hf_hub_download(REPO, "d/f0.txt", repo_type="dataset", revision=later, cache_dir=tmp_path)
        assert Path(old).read_bytes() == b"v0" and Path(new).read_bytes() == b"changed"
        assert api.file_exists(REPO, "d/f1.txt", repo_type="dataset")
        assert not api.file_exists(REPO, "d/missing.txt", repo_type="dataset")
        infos = api.get_paths_info(REPO, ["d/f1.txt", "d", "zz"], revision=later, repo_type="dataset")
        assert sorted(i.path for i in infos) == ["d", "d/f1.txt"]
        api.create_commit(REPO, [CommitOperationDelete("d/f1.txt")], commit_message="rm", repo_type="dataset")
        with pytest.raises(RemoteEntryNotFoundError):
            api.create_commit(REPO, [CommitOperationDelete("d/f1.txt")], commit_message="rm", repo_type="dataset")


def test_overlapping_commits_get_409(hub: HubEmulator) -> None:
    api = _api(hub)
    api.create_repo(REPO, repo_type="dataset")
    hub.set_faults(HubFaults(overlap_409=True, commit_hold_s=0.3))
    statuses: list[int] = []

    def commit(i: int) -> None:
        try:
            _commit(api, f"t{i}.txt", b"x")
            statuses.append(200)
        except HfHubHTTPError as exc:
            statuses.append(exc.response.status_code)

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 200 in statuses and 409 in statuses
    assert set(statuses) <= {200, 409}


def test_quota_429_carries_retry_after_on_the_emulator_clock() -> None:
    clock = ManualClock()
    with HubEmulator(faults=HubFaults(quota_commits=2, quota_window_s=600), clock=clock) as hub:
        api = _api(hub)
        api.create_repo(REPO, repo_type="dataset")
        _commit(api, "a", b"1")
        clock.advance(100)
        _commit(api, "b", b"2")
        with pytest.raises(HfHubHTTPError) as err:
            _commit(api, "c", b"3")
        assert err.value.response.status_code == 429
        assert int(err.value.response.headers["Retry-After"]) == 500
        clock.advance(500)
        _commit(api, "c", b"3")


def test_errors_after_applying_and_lagging_heads(hub: HubEmulator) -> None:
    api = _api(hub)
    api.create_repo(REPO, repo_type="dataset")
    hub.set_faults(HubFaults(script=["500-after", "drop-after"], lag_reads=2))
    with pytest.raises(HfHubHTTPError) as err:
        _commit(api, "x.txt", b"1")
    assert err.value.response.status_code == 500
    with pytest.raises(httpx2.TransportError):
        _commit(api, "y.txt", b"2")
    assert {"x.txt", "y.txt"} <= set(hub.files(REPO))  # both applied despite the failures
    head = hub.repo(REPO, "dataset").head
    lagged = [api.repo_info(REPO, repo_type="dataset").sha for _ in range(3)]
    assert lagged[:2] != [head, head] and lagged[2] == head
    refs = api.list_repo_refs(REPO, repo_type="dataset")
    assert refs.branches[0].target_commit == head
