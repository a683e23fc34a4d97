"""``migrate --to shards`` through the real CLI on a predecessor-style dataset in the loopback Hub
(``unsplash/<id>/<id>.jpg|.ply|.spz``, its compact ``data/train.jsonl``, a hand-written card), with
the real client and LFS (Xet off). Killed with kill -9 after its second step and run again: every
item once in shards (photo bytes as published, SPZ made from each PLY), no old per-item file, the
predecessor's index rows carried into ours (its original bytes kept in ``.coord/``), every commit
under 100 files, a clean ``verify --deep`` and the ``shards`` marker."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from e2e_utils import make_photos, run_cli
from huggingface_hub import CommitOperationAdd, HfApi
from migrate_checks import check_migrated, migrate_killed_after_step

from emulators.hub import HubEmulator, HubFaults, index_rows
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import encode_ply

REPO = "old/sharp-ply-share"
TOKEN = "hf_migratecanarytoken0123456789"
IDS = [f"Ph{n}oto-x_{n:02d}" for n in range(7)]


def _ply(n: int, seed: int) -> bytes:
    """A small scene in SHARP's layout (vertex block + SHARP's metadata elements)."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, 14)).astype(np.float32) * 0.3
    v[:, 2] = rng.uniform(1.0, 8.0, n)
    return encode_ply(Gaussians(vertices=v, focal_px=400.0, width=96, height=64))


def _predecessor_repo(hub: HubEmulator, tmp: Path) -> tuple[dict[str, str], dict[str, int], bytes]:
    """The predecessor's repo: per photo its files and one compact index row (resolve URL, hashes, sizes)."""
    photos = make_photos(tmp / "photos", len(IDS), seed=5)
    ops, lines, photo_sha, counts = [], [], {}, {}
    for n, (item_id, photo) in enumerate(zip(IDS, photos, strict=True)):
        jpg, ply = photo.read_bytes(), _ply(200 + 37 * n, n)
        photo_sha[item_id], counts[item_id] = hashlib.sha256(jpg).hexdigest(), 200 + 37 * n
        base = f"unsplash/{item_id}/{item_id}"
        ops += [CommitOperationAdd(f"{base}.jpg", jpg), CommitOperationAdd(f"{base}.ply", ply),
                CommitOperationAdd(f"{base}.spz", b"an spz of another converter")]
        lines.append(json.dumps({
            "image": f"https://huggingface.co/datasets/{REPO}/resolve/main/{base}.jpg", "image_id": item_id,
            "jpg_sha256": photo_sha[item_id], "ply_sha256": hashlib.sha256(ply).hexdigest(), "spz_sha256": "",
            "jpg_bytes": len(jpg), "ply_bytes": len(ply), "spz_bytes": 27, "gsplat_order_id": f"o{n}",
            "tags": "sea sky", "tags_text": "sea sky", "alt_description": "a view",
            "created_at": "2021-05-06T07:08:09Z", "user_username": "ann"}))
    index = ("\n".join(lines) + "\n").encode()
    ops += [CommitOperationAdd("data/train.jsonl", index),
            CommitOperationAdd("README.md", b"# SHARP PLY share\nWritten by hand.\n")]
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(REPO, repo_type="dataset")
    api.create_commit(REPO, ops, commit_message="predecessor uploads", repo_type="dataset")
    return photo_sha, counts, index


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
        assert files["README.md"] == b"# SHARP PLY share\nWritten by hand.\n"  # a hand-written card stays
        for commit in hub.history(REPO)[started:]:
            assert len(commit.added) + len(commit.deleted) <= 100, commit.title

        deep = run_cli(tmp_path, "verify", "--deep", "--store", store, "--json", **env)
        assert deep.returncode == 0, deep.stdout[-3000:] + deep.stderr[-2000:]
        assert json.loads(deep.stdout)["problems"] == []
        done = run_cli(tmp_path, "migrate", "--to", "shards", "--store", store, **env)
        assert done.returncode == 0 and "nothing to migrate" in done.stdout, done.stdout + done.stderr[-2000:]
