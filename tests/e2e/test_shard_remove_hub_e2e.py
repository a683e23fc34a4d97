"""The real CLI on the loopback Hub in the sharded layout: `run`, `remove --dry-run`, `remove` of a
photo that shares its tar with others, `verify --deep`, and a rerun over the same photos that skips
the removed one (issue #14)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

from e2e_utils import make_photos, run_cli

from emulators.hub import HubEmulator, index_rows
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES

REPO = "crowd/takedown"
TOKEN = "hf_e2etakedowntoken012345"


def _cli(tmp: Path, hub: HubEmulator, *args: str) -> str:
    done = run_cli(tmp, *args, "--store", f"hf:{REPO}", CLIENT_ID="e2e", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN,
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _sample_ids(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {json.loads(tf.extractfile(m).read())["id"]  # type: ignore[union-attr]
                for m in tf.getmembers() if m.name.endswith(".json")}


def test_remove_on_the_hub_through_the_cli(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 6)
    run = ("run", "--source", f"folder:{photos}", "--predictor", "planar", "--planar-resolution", "32")
    with HubEmulator(gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        hub.create(REPO)
        _cli(tmp_path, hub, *run, "--layout", "shards")
        rows = {r["id"]: r for r in index_rows(hub.files(REPO))}
        assert len(rows) == 6
        shared = Counter(r["shard_path"] for r in rows.values())
        victim = sorted(i for i, r in rows.items() if shared[r["shard_path"]] > 1)[0]
        shard = rows[victim]["shard_path"]
        commits = len(hub.history(REPO))
        dry = _cli(tmp_path, hub, "remove", victim, "--dry-run")
        assert f"rewrite shard {shard}" in dry and "nothing was changed" in dry
        assert len(hub.history(REPO)) == commits
        done = _cli(tmp_path, hub, "remove", victim, "--reason", "author asked")
        assert "removed 1 items" in done and "shards rewritten" in done
        assert len(hub.history(REPO)) == commits + 1
        files = hub.files(REPO)
        after = {r["id"]: r for r in index_rows(files)}
        assert sorted(after) == sorted(i for i in rows if i != victim)
        assert _sample_ids(files[shard]) == {i for i, r in rows.items() if r["shard_path"] == shard} - {victim}
        for row in after.values():
            for m in json.loads(row["members"]):
                tar = files[m["shard"]]
                assert hashlib.sha256(tar[m["offset"]:m["offset"] + m["size"]]).hexdigest() == m["sha256"]
        _cli(tmp_path, hub, "verify", "--deep")
        again = _cli(tmp_path, hub, *run, "--redo", "all")  # every photo again: the kept ones replaced
        assert "published 5," in again and "removed: 1" in again
        assert sorted(r["id"] for r in index_rows(hub.files(REPO))) == sorted(after)  # one row each, never the victim
        _cli(tmp_path, hub, "verify", "--deep")
