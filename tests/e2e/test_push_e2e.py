"""``sharp-dataset push --from local:DIR --to hf:REPO`` through the real CLI, onto the loopback Hub.

A local store in the sharded layout is built once by the real CLI (the bundled samples, two items
per publish step: three shards, one unit). Pushed with one tar per commit:

- every item exactly once in the target's index, each tar byte-identical (sha256) to the local one
  and sent through LFS, ``verify --deep`` clean, ``webdataset`` reading every sample, and a ``run``
  over the same photos on the Hub store publishing nothing (the unit's done marker came along);
- kill -9 once the first step landed, or while the second step's tar is being uploaded, then the
  same command: complete, each tar committed once, ``verify --deep`` clean;
- a 500 after the commit was applied, a 412 and a 409 on the push commits: retried, each step once,
  no tar uploaded twice;
- a files-layout target and a files-layout local store: one line, exit 2, nothing written.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from e2e_utils import cli_cmd, cli_env, make_photos, run_cli

from emulators.hub import HubEmulator, HubFaults, index_rows
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES
from sharp_dataset_pipeline.publish.parquet_index import read_index
from sharp_dataset_pipeline.stores.local_export import read_local_dataset

REPO = "me/splats"
TOKEN = "hf_pushcanarytoken0123456789"
SAMPLE_PHOTOS = 6
SHARDS = 3  # six samples, two per publish step


def _hub_env(hub: HubEmulator, **extra: str) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "CLIENT_ID": "pusher",
            **extra}


@pytest.fixture(scope="module")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store in the sharded layout: the samples, two per publish step."""
    work = tmp_path_factory.mktemp("push_src")
    proc = run_cli(work, "run", "--source", "samples", "--predictor", "planar", "--planar-resolution", "32",
                   "--store", f"local:{work / 'store'}", "--batch-size", "2",
                   "--progress", "none", "--client-id", "builder", LAYOUT="shards")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((work / "store" / "data" / "shards").rglob("*.tar"))) == SHARDS
    return work / "store"


def _local_tars(store: Path) -> dict[str, str]:
    return {p.relative_to(store).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (store / "data" / "shards").rglob("*.tar")}


def _local_ids(store: Path) -> set[str]:
    from sharp_dataset_pipeline.stores.local import LocalStore

    return {r.id for r in LocalStore(store).rows()}


def _push(cwd: Path, hub: HubEmulator, store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cwd, "push", "--from", f"local:{store}", "--to", f"hf:{REPO}", "--step-files", "1", *extra,
                   **_hub_env(hub))


def _tar_commits(hub: HubEmulator) -> Counter[str]:
    """How many commits added each tar (an LFS pointer line each)."""
    return Counter(p for c in hub.history(REPO) for p in c.lfs_added if p.endswith(".tar"))


def _pushed_ids(hub: HubEmulator) -> Counter[str]:
    """How many push commits published each id (the rows of the index shards each one added)."""
    ids: Counter[str] = Counter()
    for c in hub.history(REPO):
        if c.title.startswith("push "):
            added = {p: hub.blobs[c.files[p]] for p in c.added if p.endswith(".jsonl")}
            ids.update(r["id"] for r in index_rows(added))
    return ids


def _check_target(hub: HubEmulator, store: Path) -> list[dict]:
    files = hub.files(REPO)
    rows = index_rows(files)
    ids = Counter(r["id"] for r in rows)
    assert set(ids) == _local_ids(store) and len(ids) == SAMPLE_PHOTOS
    assert max(ids.values()) == 1, "an item is in the index twice"
    local = _local_tars(store)
    remote = {p: hashlib.sha256(files[p]).hexdigest() for p in files if p.endswith(".tar")}
    assert remote == local, "the tars at the target are not the local ones"
    assert {r["shard_path"] for r in rows} == set(local)
    assert _pushed_ids(hub) == Counter(dict.fromkeys(ids, 1)), "an item was pushed twice"
    parquet: Counter[str] = Counter()  # the typed index (the card's default config): each item once
    for path in sorted(p for p in files if p.startswith("data/index/") and p.endswith(".parquet")):
        parquet.update(e.row.id for e in read_index(io.BytesIO(files[path])))
    assert parquet == Counter(dict.fromkeys(ids, 1)), "the Parquet index does not hold each item once"
    for data in files.values():
        assert TOKEN.encode() not in data
    return rows


def test_push_lands_every_shard_once_and_a_later_run_skips_everything(tmp_path: Path, local_store: Path) -> None:
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        proc = _push(tmp_path, hub, local_store)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert TOKEN not in proc.stdout + proc.stderr
        assert f"pushed local:{local_store} -> hf:{REPO}: {SAMPLE_PHOTOS} items in {SHARDS} shards" in proc.stdout
        _check_target(hub, local_store)
        assert _tar_commits(hub) == Counter({p: 1 for p in _local_tars(local_store)})  # through LFS, once each
        push_commits = [c for c in hub.history(REPO) if c.title.startswith("push ")]
        assert len(push_commits) == SHARDS  # one tar per commit: three bounded commits
        files = hub.files(REPO)
        done = sorted(json.loads(v)["unit"] for p, v in files.items() if p.startswith(".coord/done/"))
        assert done == sorted(read_local_dataset(local_store).units_done) and len(done) == 1  # carried over
        assert json.loads(files[".coord/layout.json"]) == {"layout": "shards"}

        deep = run_cli(tmp_path, "verify", "--deep", "--json", "--store", f"hf:{REPO}", **_hub_env(hub))
        assert deep.returncode == 0, deep.stdout[-3000:] + deep.stderr[-3000:]
        report = json.loads(deep.stdout)
        assert report["problems"] == [] and report["rows"] == SAMPLE_PHOTOS

        tars = sorted(p for p in files if p.endswith(".tar"))
        urls = [f"{hub.url}/datasets/{REPO}/resolve/main/{p}" for p in tars]
        samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
        assert sorted(s["json"]["id"] for s in samples) == sorted(_local_ids(local_store))
        assert all(s["jpg"].size[0] > 0 and s["webp"].size[0] > 0 and len(s["spz"]) > 0 for s in samples)

        head = hub.repo(REPO).head
        again = _push(tmp_path, hub, local_store)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"{SAMPLE_PHOTOS} items were at the target already" in again.stdout
        assert hub.repo(REPO).head == head, "a push with nothing left to send committed"

        run = run_cli(tmp_path, "run", "--source", "samples", "--predictor", "planar", "--planar-resolution", "32",
                      "--store", f"hf:{REPO}", "--progress", "none", **_hub_env(hub, CLIENT_ID="later"))
        assert run.returncode == 0, run.stderr[-3000:]
        assert "published 0," in run.stdout and "units: 1 already done" in run.stdout, run.stdout
        assert hub.repo(REPO).head == head, "the later run committed (a lease, a publish)"
        _check_target(hub, local_store)


def _kill_when(proc: subprocess.Popen[str], hub: HubEmulator, moment: str) -> None:
    """SIGKILL the push once the first step landed, or while the second step's tar is being uploaded
    (its LFS object stored, its commit not sent yet: the API answers slowly)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if REPO in {k[1] for k in hub.repos}:
            if moment == "after a commit" and _tar_commits(hub):
                break
            if moment == "during an upload" and hub.stats["lfs_objects_stored"] >= 3:  # tar + Parquet, then a tar
                break
        time.sleep(0.005)
    assert proc.poll() is None, "the push finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("moment", ["after a commit", "during an upload"])
def test_a_killed_push_completes_when_run_again(tmp_path: Path, local_store: Path, moment: str) -> None:
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES, faults=HubFaults(delay_s=0.1)) as hub:
        cmd = cli_cmd("push", "--from", f"local:{local_store}", "--to", f"hf:{REPO}", "--step-files", "1")
        killed = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(**_hub_env(hub)), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, text=True)
        _kill_when(killed, hub, moment)
        landed = {r["id"] for r in index_rows(hub.files(REPO))}
        assert len(_tar_commits(hub)) == 1 and len(landed) == 2, "the kill did not fall in the second step"
        if moment == "during an upload":  # the killed step's tar reached the storage host, not the tree
            assert hub.stats["lfs_objects_stored"] >= 3

        hub.set_faults(HubFaults())
        again = _push(tmp_path, hub, local_store, "--progress", "rich")
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"{len(landed)} items were at the target already" in again.stdout
        assert "2 commits" in again.stdout and "4/4 items" in again.stderr  # the rest, with a live bar
        _check_target(hub, local_store)
        assert _tar_commits(hub) == Counter({p: 1 for p in _local_tars(local_store)}), "a tar was committed twice"
        if moment == "during an upload":
            assert hub.stats["lfs_already_present"] >= 1  # the killed step's tar was not sent again
        deep = run_cli(tmp_path, "verify", "--deep", "--json", "--store", f"hf:{REPO}", **_hub_env(hub))
        assert deep.returncode == 0 and json.loads(deep.stdout)["problems"] == [], deep.stdout[-3000:]


def test_faults_on_the_push_commits_are_retried_and_land_once(tmp_path: Path, local_store: Path) -> None:
    # The first commit is the new dataset's card and layout marker; then the three push steps: the
    # first lands but its answer is a 500, the second is refused with a 500 (not applied), then a 412
    # and a 409.
    faults = HubFaults(script=[None, "500-after", 500, 412, 409])
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES, faults=faults) as hub:
        proc = _push(tmp_path, hub, local_store)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert hub.stats["commit_500_after_apply"] == 1 and hub.stats["status_412"] == 1
        assert hub.stats["status_409"] == 1 and hub.stats["status_500"] == 2
        _check_target(hub, local_store)
        assert _tar_commits(hub) == Counter({p: 1 for p in _local_tars(local_store)})
        # Each LFS object (tars and Parquet index shards) reached the storage host once.
        stored = hub.repo(REPO).lfs_objects
        assert hub.stats["lfs_bytes_received"] == sum(len(v) for v in stored.values())


def test_a_files_layout_target_or_source_is_refused_with_one_line(tmp_path: Path, local_store: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 1)
    with HubEmulator() as hub:
        made = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar", "--store",
                       f"hf:{REPO}", "--layout", "files", "--progress", "none", **_hub_env(hub))
        assert made.returncode == 0, made.stderr[-3000:]
        head = hub.repo(REPO).head
        proc = _push(tmp_path, hub, local_store)
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: push: hf:{REPO} is in the files layout; push needs a new or sharded dataset: "
                          f"push to a new repo, or convert this one with `sharp-dataset migrate --to shards "
                          f"--store hf:{REPO}` first"], proc.stderr[-2000:]
        assert hub.repo(REPO).head == head, "the refused push wrote to the target"

        files_store = tmp_path / "files-store"
        built = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar", "--store",
                        f"local:{files_store}", "--layout", "files", "--progress", "none")
        assert built.returncode == 0, built.stderr[-3000:]
        proc = run_cli(tmp_path, "push", "--from", f"local:{files_store}", "--to", "hf:me/new", **_hub_env(hub))
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "is in the files layout" in proc.stderr and "`sharp-dataset migrate --to shards" in proc.stderr
        assert ("dataset", "me/new") not in hub.repos, "the refused push created the target"
    shutil.rmtree(files_store, ignore_errors=True)


def _failures(cwd: Path, store: str, **env: str) -> dict[str, tuple]:
    proc = run_cli(cwd, "failures", "--store", store, "--json", **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {d["source"]: (d["id"], d["unit"], d["stage"], d["reason"], d["attempts"], d["transient"], d["last"])
            for d in json.loads(proc.stdout)}


def test_local_failures_are_carried_over_once_and_a_redo_there_retries_them(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "store"
    make_photos(photos, 2, seed=43)
    (photos / "broken.jpg").write_bytes(b"not a jpeg " * 20)
    built = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                    "--planar-resolution", "24", "--store", f"local:{store}", "--progress", "none", LAYOUT="shards")
    assert built.returncode == 0, built.stderr[-3000:]
    local = _failures(tmp_path, f"local:{store}")
    assert [(v[2], v[3], v[4], v[5]) for v in local.values()] == [("fetch", "not_an_image", 1, False)]
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        proc = _push(tmp_path, hub, store)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "1 local failure record carried over" in proc.stdout, proc.stdout
        assert _failures(tmp_path, f"hf:{REPO}", **_hub_env(hub)) == local  # source, reason, attempts, time

        head = hub.repo(REPO).head
        again = _push(tmp_path, hub, store)
        assert again.returncode == 0, again.stderr[-3000:]
        assert hub.repo(REPO).head == head and "carried over" not in again.stdout  # carried once

        # The carried record reopens the (done) unit for a redo there, as it would here: tried a second time.
        redo = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                       "--planar-resolution", "24", "--store", f"hf:{REPO}", "--redo", "failed", "--progress",
                       "none", **_hub_env(hub, CLIENT_ID="later"))
        assert redo.returncode in (0, 1), redo.stderr[-3000:]
        assert "published 0," in redo.stdout, redo.stdout
        after = _failures(tmp_path, f"hf:{REPO}", **_hub_env(hub))
        assert [(v[0], v[3], v[4]) for v in after.values()] == [(v[0], v[3], 2) for v in local.values()]
