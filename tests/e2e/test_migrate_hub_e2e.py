"""``migrate --to shards`` through the real CLI on a predecessor-style dataset in the loopback Hub
(``unsplash/<id>/<id>.jpg|.ply|.spz``, its compact ``data/train.jsonl``, a hand-written card), with
the real client and LFS (Xet off; one PLY is over 10 MB, so its tar goes through LFS). Killed with
kill -9 after its second step and run again: every item once in shards (photo bytes as published,
SPZ made from each PLY), no old per-item file, the predecessor's index rows carried into ours (its
original bytes kept in ``.coord/``), every commit under 100 files, a clean ``verify --deep`` and
the ``shards`` marker."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from e2e_utils import run_cli
from huggingface_hub import CommitOperationAdd, HfApi
from migrate_checks import check_migrated, check_retargeted_card, migrate_killed_after_step, predecessor_files

from emulators.hub import HubEmulator, HubFaults, index_rows

REPO = "old/sharp-ply-share"
TOKEN = "hf_migratecanarytoken0123456789"
IDS = [f"Ph{n}oto-x_{n:02d}" for n in range(7)]


def _predecessor_repo(hub: HubEmulator, tmp: Path) -> tuple[dict[str, str], dict[str, int], bytes]:
    """The predecessor's repo (``predecessor_files``), uploaded in one commit by the real client."""
    files, photo_sha, counts = predecessor_files(tmp, IDS, REPO, big=5)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(REPO, repo_type="dataset")
    api.create_commit(REPO, [CommitOperationAdd(p, data) for p, data in files.items()],
                      commit_message="predecessor uploads", repo_type="dataset")
    return photo_sha, counts, files["data/train.jsonl"]


def test_a_predecessor_dataset_on_the_hub_migrates_to_shards_across_a_kill(tmp_path: Path) -> None:
    with HubEmulator(faults=HubFaults(commit_hold_s=0.2)) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "HF_HUB_DISABLE_XET": "1", "CLIENT_ID": "mover"}
        photo_sha, counts, index = _predecessor_repo(hub, tmp_path)
        started = len(hub.history(REPO))
        store = f"hf:{REPO}"

        migrate_killed_after_step(tmp_path, store, 2, "--step-items", "2", **env)
        files = hub.files(REPO)
        mixed = {r.get("id", r.get("image_id")): r for r in index_rows(files)}
        assert sorted(mixed) == sorted(IDS)  # mixed: shard rows and predecessor rows, none lost
        assert 4 <= sum(1 for r in mixed.values() if r.get("shard_path")) < len(IDS)
        assert files[".coord/migrate/predecessor-train.jsonl"] == index
        for item_id, row in mixed.items():  # each item's bytes are in its shards or still in its files
            named = [row["shard_path"]] if row.get("shard_path") else [f"unsplash/{item_id}/{item_id}.{e}"
                                                                       for e in ("jpg", "ply")]
            assert all(p in files for p in named), (item_id, named)

        # The last landed step's old files wait for the next step: verify counts them apart, not as orphans.
        waiting = set(json.loads(files[".coord/progress/ops.migrate.json"])["delete_next"])
        left = [p for p in files if p.rsplit("/", 1)[0] + "/" in waiting]
        assert waiting and all(w.endswith("/") for w in waiting) and len(left) >= 2 * len(waiting)
        mid = run_cli(tmp_path, "verify", "--deep", "--store", store, "--json", **env)
        report = json.loads(mid.stdout)
        assert mid.returncode == 0 and report["ok"], report["problems"]
        assert report["awaiting_deletion"] == len(left) and report["members"] > 0
        said = run_cli(tmp_path, "verify", "--store", store, **env)
        assert f"{len(left)} old files of migrated items wait for the next" in said.stdout, said.stdout

        resumed = run_cli(tmp_path, "migrate", "--to", "shards", "--store", store, "--step-items", "2", **env)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "is in the shards layout now" in resumed.stdout, resumed.stdout
        files = hub.files(REPO)
        rows = index_rows(files)
        shards = tmp_path / "shards"

        def shard_file(path: str) -> Path:
            local = shards / path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(files[path])
            return local

        check_migrated(rows, shard_file, photo_sha, counts)
        assert not [p for p in files if p.startswith("unsplash/")]  # no old per-item file left
        assert json.loads(files[".coord/layout.json"]) == {"layout": "shards"}
        assert files[".coord/migrate/predecessor-train.jsonl"] == index  # the original, byte for byte
        by_id = {r["id"]: r for r in rows}
        assert by_id[IDS[0]]["tags"] == "sea, sky" and by_id[IDS[0]]["user_username"] == "ann"
        assert by_id[IDS[0]]["unsplash_url"] == f"https://unsplash.com/photos/{IDS[0]}"
        ply_tar = tarfile.open(fileobj=io.BytesIO(files[by_id[IDS[3]]["ply_shard_path"]]))
        assert hashlib.sha256(ply_tar.extractfile(f"{by_id[IDS[3]]['shard_key']}.ply").read()).hexdigest() \
            == json.loads(index.decode().splitlines()[3])["ply_sha256"]  # the full PLY kept, as it was
        check_retargeted_card(files["README.md"], ply=True)  # its text stays, its configs name the shards
        for commit in hub.history(REPO)[started:]:
            assert len(commit.added) + len(commit.deleted) <= 100, commit.title
        big_tar = by_id[IDS[5]]["ply_shard_path"]  # over 10 MB: uploaded through LFS before its commit
        assert [big_tar] == [p for c in hub.history(REPO)[started:] for p in c.lfs_added]

        deep = run_cli(tmp_path, "verify", "--deep", "--store", store, "--json", **env)
        assert deep.returncode == 0, deep.stdout[-3000:] + deep.stderr[-2000:]
        assert json.loads(deep.stdout)["problems"] == []
        done = run_cli(tmp_path, "migrate", "--to", "shards", "--store", store, **env)
        assert done.returncode == 0 and "nothing to migrate" in done.stdout, done.stdout + done.stderr[-2000:]
