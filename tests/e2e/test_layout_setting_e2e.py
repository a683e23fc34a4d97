"""The LAYOUT setting through the real CLI: ``--layout shards`` on the loopback Hub publishes tars with
the shards layout's default formats (spz + a WebP preview, no PLY); a files layout asked of that
repository afterwards, is a one-line config error (exit 2); the local store publishes shards too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from e2e_utils import cli_cmd, cli_env, make_photos

from emulators.hub import HubEmulator, index_rows

REPO = "crowd/layouts"
TOKEN = "hf_layoutcanarytoken0123456789"


def _run(cwd: Path, photos: Path, store: str, run_id: str, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = cli_cmd("run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", store,
                  "--run-id", run_id, "--progress", "none", *extra)
    return subprocess.run(cmd, cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=300)


def test_layout_shards_publishes_tars_with_spz_and_a_mismatch_is_refused(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    with HubEmulator() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        p = _run(tmp_path, photos, f"hf:{REPO}", "a", "--layout", "shards", **env)
        assert p.returncode == 0, p.stderr[-3000:]
        files = hub.files(REPO)
        assert json.loads(files[".coord/layout.json"]) == {"layout": "shards"}
        rows = index_rows(files)
        assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
        for row in rows:
            assert row["shard_path"].startswith("data/shards/") and row["shard_path"] in files
            fields = {m["field"] for m in json.loads(row["members"])}
            assert {"spz", "webp", "json"} <= fields and "ply" not in fields, fields
            assert row["ply_shard_path"] == ""  # the default formats publish no PLY
        assert any(p.startswith("data/index/pending/") and p.endswith(".parquet") for p in files)

        p = _run(tmp_path, photos, f"hf:{REPO}", "b", "--layout", "files", **env)
        assert p.returncode == 2, p.stderr[-3000:]
        assert "error: LAYOUT=files, but this dataset is in the shards layout" in p.stderr, p.stderr[-2000:]
        assert TOKEN not in p.stderr

    local = tmp_path / "store"
    p = _run(tmp_path, photos, f"local:{local}", "c", "--layout", "shards")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((local / ".coord" / "layout.json").read_text()) == {"layout": "shards"}
    assert list((local / "data" / "shards").rglob("*.tar")) and not list(local.rglob("*.ply"))
