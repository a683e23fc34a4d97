"""Big files on the loopback Hub, driven by the real ``huggingface_hub`` client with Xet disabled (conftest):
preupload says ``lfs`` over 10 MiB, the bytes go through the git-LFS batch API to the storage host once,
commits reference them by sha256, downloads return them, and upload faults behave as on the Hub.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationCopy, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from emulators.hub import HubEmulator, HubFaults, ManualClock, make_items
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES
from sharp_dataset_pipeline.records import Batch
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore

REPO = "tester/big"
TOKEN = "hf_emulatortesttoken000"
BIG = random.Random(14).randbytes(12 * 1024 * 1024)  # over the Hub's 10 MiB limit for inline files
SMALL = b"{}\n" + bytes(range(256)) * 4  # 1 KB


def _api(hub: HubEmulator) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


def _base(api: HfApi) -> str:
    api.create_repo(REPO, repo_type="dataset", exist_ok=True)
    return api.repo_info(REPO, repo_type="dataset").sha


def _download(hub: HubEmulator, path: str, cache: Path, revision: str | None = None) -> bytes:
    return Path(hf_hub_download(REPO, path, repo_type="dataset", revision=revision, endpoint=hub.url,
                                token=TOKEN, cache_dir=cache)).read_bytes()


def _preupload_and_commit(api: HfApi, files: dict[str, bytes], parent: str) -> str:
    ops = [CommitOperationAdd(path, data) for path, data in files.items()]
    api.preupload_lfs_files(REPO, ops, repo_type="dataset")
    return api.create_commit(REPO, ops, commit_message="shards", repo_type="dataset", parent_commit=parent).oid


def _raw_commit(hub: HubEmulator, parent: str, *lines: dict) -> httpx2.Response:
    """A commit POST written by hand: what a client that skipped (or lost) the upload would send."""
    body = "\n".join(json.dumps(x) for x in [{"key": "header", "value": {"summary": "raw", "parentCommit": parent}},
                                              *lines])
    return httpx2.post(f"{hub.url}/api/datasets/{REPO}/commit/main", content=body.encode(),
                       headers={"Content-Type": "application/x-ndjson", "Authorization": f"Bearer {TOKEN}"})


def test_big_file_goes_through_lfs_once_small_inline_and_both_download(tmp_path: Path) -> None:
    with HubEmulator() as hub:
        api = _api(hub)
        base = _base(api)
        first = _preupload_and_commit(api, {"data/shard-0.tar": BIG, "data/index-0.jsonl": SMALL}, base)
        # (a) the big file reached the storage host once, byte for byte; the small one came inline
        assert hub.stats["lfs_put_requests"] == 1 and hub.stats["lfs_bytes_received"] == len(BIG)
        assert hub.stats["inline_bytes_received"] == len(SMALL)
        commit = hub.history(REPO)[-1]
        assert commit.sha == first and commit.lfs_added == ["data/shard-0.tar"]
        assert commit.added == ["data/index-0.jsonl", "data/shard-0.tar"]
        tree = {e.path: e for e in api.list_repo_tree(REPO, "data", revision=first, repo_type="dataset")}
        assert tree["data/shard-0.tar"].lfs.sha256 == hashlib.sha256(BIG).hexdigest()
        assert tree["data/shard-0.tar"].size == len(BIG) and tree["data/index-0.jsonl"].lfs is None
        # (b) a later commit naming the same bytes sends none of them, even after a 412 and a retry
        with pytest.raises(HfHubHTTPError) as stale:
            _preupload_and_commit(api, {"data/shard-1.tar": BIG}, base)
        assert stale.value.response.status_code == 412
        second = _preupload_and_commit(api, {"data/shard-1.tar": BIG, "data/index-1.jsonl": b"[]\n"}, first)
        assert hub.stats["lfs_bytes_received"] == len(BIG) and hub.stats["lfs_put_requests"] == 1
        assert hub.stats["inline_bytes_received"] == len(SMALL) + len(b"[]\n")
        assert hub.stats["lfs_already_present"] == 2
        assert hub.history(REPO)[-1].lfs_added == ["data/shard-1.tar"]
        # (c) downloads return identical bytes (the LFS ones by a redirect to the storage host)
        assert _download(hub, "data/shard-0.tar", tmp_path, first) == BIG
        assert _download(hub, "data/shard-1.tar", tmp_path, second) == BIG
        assert _download(hub, "data/index-0.jsonl", tmp_path) == SMALL
        assert hub.stats["lfs_downloads"] == 1  # the second download came from the client's cache (same etag)
        assert hub.files(REPO)["data/shard-1.tar"] == BIG


def test_a_5xx_on_the_upload_is_retried_by_the_client(tmp_path: Path) -> None:
    with HubEmulator(faults=HubFaults(lfs_script=[503])) as hub:
        api = _api(hub)
        sha = _preupload_and_commit(api, {"big.tar": BIG}, _base(api))
        assert hub.stats["lfs_put_503"] == 1 and hub.stats["lfs_put_requests"] == 2
        assert hub.stats["lfs_objects_stored"] == 1
        assert _download(hub, "big.tar", tmp_path, sha) == BIG


def test_a_dropped_upload_connection_is_retried_by_the_client(tmp_path: Path) -> None:
    with HubEmulator(faults=HubFaults(lfs_script=["drop"])) as hub:
        api = _api(hub)
        sha = _preupload_and_commit(api, {"big.tar": BIG}, _base(api))
        assert hub.stats["lfs_put_dropped"] == 1 and hub.stats["lfs_objects_stored"] == 1
        assert _download(hub, "big.tar", tmp_path, sha) == BIG


def test_a_truncated_upload_is_refused_and_a_commit_naming_it_is_rejected(tmp_path: Path) -> None:
    with HubEmulator(faults=HubFaults(lfs_script=["truncate"])) as hub:
        api = _api(hub)
        base = _base(api)
        ops = [CommitOperationAdd("big.tar", BIG)]
        with pytest.raises(RuntimeError, match="big.tar") as err:
            api.preupload_lfs_files(REPO, ops, repo_type="dataset")
        assert isinstance(err.value.__cause__, HfHubHTTPError)
        assert err.value.__cause__.response.status_code == 400  # not retried: the bytes were wrong
        assert hub.stats["lfs_put_truncated"] == 1 and hub.repo(REPO).lfs_objects == {}
        oid = hashlib.sha256(BIG).hexdigest()
        refused = _raw_commit(hub, base, {"key": "lfsFile", "value": {"path": "big.tar", "algo": "sha256",
                                                                      "oid": oid, "size": len(BIG)}})
        assert refused.status_code == 400
        assert "LFS pointer pointed to a file that does not exist" in refused.headers["X-Error-Message"]
        assert hub.repo(REPO).head == base and hub.stats["commit_missing_lfs"] == 1
        # The client's own retry (a fresh operation) uploads the bytes again and then commits.
        sha = _preupload_and_commit(api, {"big.tar": BIG}, base)
        assert hub.stats["lfs_objects_stored"] == 1 and _download(hub, "big.tar", tmp_path, sha) == BIG


def test_a_commit_with_a_wrong_lfs_size_or_a_big_inline_file_is_rejected() -> None:
    with HubEmulator() as hub:
        api = _api(hub)
        base = _base(api)
        _preupload_and_commit(api, {"big.tar": BIG}, base)
        head = hub.repo(REPO).head
        oid = hashlib.sha256(BIG).hexdigest()
        wrong = _raw_commit(hub, head, {"key": "lfsFile", "value": {"path": "other.tar", "algo": "sha256",
                                                                    "oid": oid, "size": len(BIG) - 1}})
        inline = _raw_commit(hub, head, {"key": "file", "value": {
            "path": "inline.bin", "encoding": "base64", "content": base64.b64encode(BIG).decode()}})
        assert (wrong.status_code, inline.status_code) == (400, 400)
        assert "10 MiB" in inline.headers["X-Error-Message"] and hub.repo(REPO).head == head


def test_multipart_uploads_when_the_server_asks_for_parts(tmp_path: Path) -> None:
    """The client has no size threshold of its own: it splits when the batch answer gives a chunk size."""
    with HubEmulator(lfs_chunk_size=5 * 1024 * 1024, faults=HubFaults(lfs_script=[None, 500])) as hub:
        api = _api(hub)
        sha = _preupload_and_commit(api, {"big.tar": BIG, "small.tar": SMALL}, _base(api))
        assert hub.stats["lfs_parts_received"] == 3 and hub.stats["lfs_put_500"] == 1  # part 2 was resent
        assert hub.stats["lfs_multipart_completed"] == 1 and hub.stats["lfs_bytes_received"] == len(BIG) + (5 << 20)
        assert hub.history(REPO)[-1].lfs_added == ["big.tar"]
        assert _download(hub, "big.tar", tmp_path, sha) == BIG


def test_gitattributes_lfs_patterns_send_small_files_through_lfs() -> None:
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        api = _api(hub)
        _preupload_and_commit(api, {"data/s.tar": SMALL, "data/i.parquet": SMALL + b"p", "data/i.jsonl": SMALL,
                                    "README.md": b"# card\n"}, _base(api))
        assert hub.history(REPO)[-1].lfs_added == ["data/i.parquet", "data/s.tar"]
        assert hub.stats["lfs_objects_stored"] == 2
    with HubEmulator() as hub:  # the default: only *.bin, so small shards stay inline
        api = _api(hub)
        _preupload_and_commit(api, {"data/s.tar": SMALL, "x/y.bin": SMALL}, _base(api))
        assert hub.history(REPO)[-1].lfs_added == ["x/y.bin"]


def test_a_client_with_xet_enabled_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator never advertises Xet; a client that tries it anyway gets a 404, not a silent fallback."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    with HubEmulator() as hub:
        api = _api(hub)
        base = _base(api)
        with pytest.raises(OSError, match="xet-write-token"):
            _preupload_and_commit(api, {"big.tar": BIG}, base)
        assert hub.stats["lfs_put_requests"] == 0 and hub.repo(REPO).head == base


def _big_item(tmp_path: Path, item_id: str):
    """A publishable item whose PLY is over 10 MiB (the rest as ``make_items`` makes it)."""
    item = make_items(tmp_path, [item_id])[0]
    i, small = next((i, f) for i, f in enumerate(item.files) if f.kind == "ply")
    data = random.Random(item_id).randbytes(11 * 1024 * 1024)
    small.local_path.write_bytes(data)
    ply = dataclasses.replace(small, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    item.files[i] = ply
    item.row.ply_size, item.row.ply_sha256 = ply.size, ply.sha256
    return item, ply, data


def test_the_hub_store_publishes_big_files_through_lfs_once_and_verifies_them(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock, faults=HubFaults(script=[409])) as hub:
        store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id="c1", cache_dir=tmp_path / "cache",
                                    layout="files",
                                    state_max_age_s=0.0, retry_base_s=0.5), clock=clock, sleep=clock.sleep)
        store.open()
        item, ply, data = _big_item(tmp_path / "items", "big1")
        receipt = store.publish(Batch("c1", items=[item]))
        assert receipt.published_ids == ["big1"] and hub.stats["status_409"] == 1  # refused once, then landed
        assert hub.stats["lfs_bytes_received"] == len(data)  # the resend after the 409 sent no bytes again
        assert ply.repo_path in hub.history(REPO)[-1].lfs_added
        assert hub.files(REPO)[ply.repo_path] == data
        report = store.admin().verify(clock(), deep=True)
        assert report.ok and report.rows == 1, report.problems
        assert hub.stats["lfs_downloads"] == 0  # deep verify took the sha256 the Hub keeps for LFS files


def test_an_lfs_copy_or_rename_is_server_side(tmp_path: Path) -> None:
    with HubEmulator() as hub:
        api = _api(hub)
        _preupload_and_commit(api, {"a/big.tar": BIG}, _base(api))
        sent = hub.stats["lfs_bytes_received"]
        moved = api.create_commit(REPO, [CommitOperationCopy("a/big.tar", "b/big.tar"),
                                         CommitOperationDelete("a/big.tar")],
                                  commit_message="rename", repo_type="dataset").oid
        assert hub.stats["lfs_bytes_received"] == sent and hub.stats["inline_bytes_received"] == 0
        assert hub.history(REPO)[-1].lfs_added == ["b/big.tar"] and "a/big.tar" not in hub.files(REPO)
        assert _download(hub, "b/big.tar", tmp_path, moved) == BIG


@pytest.mark.parametrize("refusal", [412, 409, 500])
def test_a_refused_commit_attempt_sends_no_file_again(tmp_path: Path, refusal: int) -> None:
    """The store uploads an item's files once, before its first commit attempt: after a 412 (decided
    again at the new head), a 409 or an unknown outcome (500, nothing applied) the next attempt reuses
    the uploaded operations, so no LFS batch call, storage PUT or preupload of those files is repeated."""
    clock = ManualClock()
    with HubEmulator(clock=clock) as hub:
        store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id="c1", cache_dir=tmp_path / "cache",
                                    layout="files",
                                    state_max_age_s=0.0, retry_base_s=0.5), clock=clock, sleep=clock.sleep)
        store.open()
        hub.faults.script = [refusal]
        before = {k: hub.stats[k] for k in ("preupload", "api", "lfs_batch", "inline_bytes_received")}
        item, ply, data = _big_item(tmp_path / "items", "big1")
        small = sum(f.size for f in item.files if f is not ply)
        receipt = store.publish(Batch("c1", items=[item]))
        assert receipt.published_ids == ["big1"] and hub.stats[f"status_{refusal}"] == 1
        assert len(hub.history(REPO)) == 3  # .gitattributes, the card, the batch: applied once
        assert hub.stats["lfs_batch"] - before["lfs_batch"] == 1 and hub.stats["lfs_put_requests"] == 1
        assert hub.stats["lfs_bytes_received"] == len(data) and hub.stats["lfs_already_present"] == 0
        # the item's small files went inline in each of the two attempts (that is what inline means)
        inline = hub.stats["inline_bytes_received"] - before["inline_bytes_received"]
        assert inline >= 2 * small
        # one preupload for the files on disk, then one per attempt for the in-memory coordination files
        assert hub.stats["preupload"] - before["preupload"] == 3
        assert hub.files(REPO)[ply.repo_path] == data and ply.repo_path in hub.history(REPO)[-1].lfs_added
        report = store.budget_report()
        assert report["lfs_uploads"] == 1 and report["lfs_bytes"] == len(data)
        # the client's API count covers every API request the Hub saw since open (LFS verify included)
        assert report["api_calls"] >= hub.stats["api"] - before["api"]
        store.close()
