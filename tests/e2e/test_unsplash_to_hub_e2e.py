"""Both outside services at once: two machines read the Unsplash list feed (emulator) and publish into
one Hub repository (emulator), as volunteers would. Every photo once, tracked once, attributed."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

from e2e_utils import cli_cmd, cli_env

from emulators.hub import HubEmulator, HubFaults, index_rows
from emulators.unsplash import UnsplashEmulator

KEY = "test-access-key-0123"
TOKEN = "hf_unsplashhubcanary0123456789"
REPO = "volunteers/splats"


def test_two_machines_fill_one_hub_repo_from_the_unsplash_list(tmp_path: Path) -> None:
    with UnsplashEmulator(n_photos=120, access_key=KEY, leading_dash_ids=False) as emu, \
            HubEmulator(faults=HubFaults(seed=3, overlap_409=True, random_409_rate=0.05,
                                         error_after_commit_rate=0.05)) as hub:
        emu.prepend_after_list_requests(every=2, n=2)
        env = {"UNSPLASH_ACCESS_KEY": KEY, "UNSPLASH_API_BASE": emu.base_url, "UNSPLASH_DETAILS": "never",
               "UNSPLASH_APP_NAME": "e2e_app", "PLANAR_RESOLUTION": "48", "HF_ENDPOINT": hub.url,
               "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        original = set(emu.feed)
        procs = [
            subprocess.Popen(cli_cmd("run", "--source", "unsplash-list", "--predictor", "planar", "--store",
                                     f"hf:{REPO}", "--range-size", "30", "--batch-size", "10", "--run-id", name),
                             cwd=tmp_path, env=cli_env(CLIENT_ID=name, **env), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for name in ("alice", "bob")
        ]
        for p in procs:
            _, err = p.communicate(timeout=400)
            assert p.returncode == 0, err[-3000:]
            assert TOKEN not in err and KEY not in err
        rows = index_rows(hub.files(REPO))
        ids = Counter(r["id"] for r in rows)
        # Photos that arrived during the run may be in a later client's units too; none is lost or doubled.
        assert original <= set(ids) <= set(emu.feed) and max(ids.values()) == 1
        assert dict(emu.tracked) == {pid: 1 for pid in ids}, "download tracking must match publishing"
        assert all(r["license"] == "Unsplash License" and "utm_medium=referral" in r["page_url"] for r in rows)
        assert {r["client_id"] for r in rows} == {"alice", "bob"}
        for data in hub.files(REPO).values():
            assert KEY.encode() not in data and TOKEN.encode() not in data
