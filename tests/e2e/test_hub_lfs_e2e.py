"""The real CLI publishing splats over 10 MiB to the loopback Hub: they go through git-LFS, not inline.

The CLI subprocess inherits ``HF_HUB_DISABLE_XET=1`` from the test environment (tests/conftest.py), so
this also shows that the suite's Hub clients take the LFS path the emulator speaks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from e2e_utils import make_photos, run_cli

from emulators.hub import HubEmulator, HubFaults, index_rows

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")

REPO = "crowd/bigsplats"
TOKEN = "hf_e2ecanarytoken0123456789"


def _cli(cwd: Path, hub: HubEmulator, *args: str):
    return run_cli(cwd, *args, CLIENT_ID="big", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN,
                   HF_HUB_DISABLE_PROGRESS_BARS="1", PLANAR_RESOLUTION="560")  # ~13 MB PLYs


def test_big_plys_are_published_through_lfs_once_and_verify_deeply(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 2, seed=21, size=(640, 480))
    with HubEmulator(faults=HubFaults(lfs_script=[503])) as hub:
        run = ["run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"hf:{REPO}"]
        proc = _cli(tmp_path, hub, *run)
        assert proc.returncode == 0, proc.stderr[-3000:]
        files = hub.files(REPO)
        rows = index_rows(files)
        plys = sorted(r["ply_path"] for r in rows)
        assert len(plys) == 2 and all(r["ply_size"] > 10 * 1024 * 1024 for r in rows)
        for row in rows:
            assert hashlib.sha256(files[row["ply_path"]]).hexdigest() == row["ply_sha256"]
        lfs_added = sorted(p for c in hub.history(REPO) for p in c.lfs_added)
        assert lfs_added == plys  # the PLYs, and nothing small, went through LFS
        assert hub.stats["lfs_put_503"] == 1 and hub.stats["lfs_put_requests"] == 3  # one retried PUT
        assert hub.stats["lfs_objects_stored"] == 2 and hub.stats["inline_bytes_received"] < 1024 * 1024
        sent = hub.stats["lfs_bytes_received"]

        again = _cli(tmp_path, hub, *run)
        assert again.returncode == 0, again.stderr[-3000:]
        assert hub.stats["lfs_bytes_received"] == sent and len(index_rows(hub.files(REPO))) == 2
        deep = _cli(tmp_path, hub, "verify", "--deep", "--store", f"hf:{REPO}", "--json")
        assert deep.returncode == 0, deep.stdout[-3000:] + deep.stderr[-3000:]
        assert json.loads(deep.stdout)["problems"] == []
        assert hub.stats["lfs_downloads"] == 0  # the Hub's own sha256 of LFS files, no download
