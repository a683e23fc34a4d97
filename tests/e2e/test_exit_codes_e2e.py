"""The exit codes of ``sharp-dataset run`` that a script can trust, through the real CLI.

0 the run did its work (item failures are data), 1 the store could not publish / no item was
published and at least one failed / the disk is full, 2 invalid settings or usage, 3 stopped by a
rate limit with nothing to do until the window reopens.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_utils import make_photos, read_rows, run_cli

from emulators.faults import Fault
from emulators.unsplash import UnsplashEmulator

KEY = "test-access-key-0123"


def _run(tmp_path: Path, photos: Path, store: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                   "--store", f"local:{store}", "--planar-resolution", "48", *extra, **env)


def test_exit_0_when_some_items_fail_and_the_rest_is_published(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    done = _run(tmp_path, photos, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert len(read_rows(tmp_path / "out")) == 3
    assert "published 3, failed 1 (not_an_image: 1)" in done.stdout


def test_exit_1_when_every_input_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "empty.jpg").write_bytes(b"")
    (broken / "garbage.jpg").write_bytes(b"garbage")
    (broken / "noise.png").write_bytes(bytes(range(256)) * 8)
    done = _run(tmp_path, broken, tmp_path / "out")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "published 0, failed 3" in done.stdout


def test_exit_1_when_the_store_cannot_publish(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    store = tmp_path / "out"
    (store / "data").mkdir(parents=True)
    (store / "data" / "shards").write_text("a file where the store puts its shards\n")  # every publish fails
    done = _run(tmp_path, photos, store)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stopped: the store failed to publish" in done.stdout
    assert "publish failed" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root: CI containers and this project's test machines run as root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tiny tmpfs to fill (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_exit_1_when_the_disk_fills_after_some_items_were_published(tmp_path: Path, tiny_disk: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 40)
    # The run folder is on the tiny disk, the store is not: the store copies, the kept run files
    # (KEEP_RUN_FILES=1) fill the tiny disk after a few items.
    done = _run(tmp_path, photos, tmp_path / "out", "--batch-size", "1", "--summary-json",
                str(tmp_path / "summary.json"), SAVE_DIR=str(tiny_disk / "run"), KEEP_RUN_FILES="1",
                DOWNLOAD_WORKERS="1")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["published"] >= 1, done.stdout + done.stderr
    assert summary["stop_cause"] == "disk_full"
    assert "stopped: disk full" in done.stdout
    assert done.returncode == 1, done.stdout + done.stderr


def test_exit_3_when_a_rate_limit_stops_the_run(tmp_path: Path) -> None:
    with UnsplashEmulator(n_photos=120, access_key=KEY, leading_dash_ids=False) as emu:
        # The feed's first two requests are served, the third gets a plain-text 403 rate limit.
        emu.faults.add(Fault(), Fault(), Fault(status=403, body=b"Rate Limit Exceeded", headers={"Retry-After": "60"}),
                       path="/photos")
        done = run_cli(tmp_path, "run", "--source", "unsplash-list", "--predictor", "planar",
                       "--store", f"local:{tmp_path / 'out'}", "--range-size", "30",
                       UNSPLASH_ACCESS_KEY=KEY, UNSPLASH_API_BASE=emu.base_url, UNSPLASH_DETAILS="never",
                       UNSPLASH_APP_NAME="e2e_app", PLANAR_RESOLUTION="48", PER_PAGE="30")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "window reopens at" in done.stdout
    assert len(read_rows(tmp_path / "out")) == 30  # the page listed before the limit was published


@pytest.mark.parametrize(("env", "message"), [
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL:"),
    ({"HF_UPLOAD_BATCH_SIZE": "0"}, "HF_UPLOAD_BATCH_SIZE:"),
    ({"MAX_IMAGES": "-1"}, "MAX_IMAGES:"),
    ({"HF_SUBDIR": "../../up"}, "HF_SUBDIR:"),  # else every item would fail at publish, one by one
])
def test_exit_2_on_invalid_settings_with_one_line_and_no_run_folder(
        tmp_path: Path, env: dict[str, str], message: str) -> None:
    done = run_cli(tmp_path, "run", "--predictor", "planar", "--store", f"local:{tmp_path / 'out'}", **env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: invalid setting: ") and message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args", [
    ("--source", "folder:/no/such/folder", "--predictor", "planar"),
    ("--source", "samples", "--predictor", "nope"),
    ("--source", "ftp:x", "--predictor", "planar"),
    ("--source", "manifest:/no/such/photos.csv", "--predictor", "planar"),
    ("--source", "manifest:file:///no/such/photos.tsv", "--predictor", "planar"),
])
def test_exit_2_on_a_rejected_invocation_leaves_no_empty_run_folder(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = run_cli(tmp_path, "run", *args, "--store", f"local:{tmp_path / 'out'}")
    assert done.returncode == 2, done.stderr
    assert "error: " in done.stderr and "Traceback" not in done.stderr
    leftovers = list((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else []
    assert leftovers == []
    assert not (tmp_path / "out").exists()  # nor an empty store


def test_a_near_miss_name_in_the_env_file_is_named_with_the_likely_setting(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_IMAGE=2\nPREDICTOR=planar\nSOME_OTHER_TOOL=1\n")
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    done = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--store", f"local:{tmp_path / 'out'}",
                   "--planar-resolution", "48")
    assert done.returncode == 0, done.stderr
    assert "MAX_IMAGE in .env is not a setting and is ignored; did you mean MAX_IMAGES?" in done.stderr
    assert "SOME_OTHER_TOOL" not in done.stderr  # unrelated names of other tools stay quiet
    assert len(read_rows(tmp_path / "out")) == 3  # ignored, as the warning says


def test_run_help_documents_exit_codes_and_publish_formats(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "run", "--help")
    assert done.returncode == 0
    out = done.stdout
    assert "--publish-formats" in out and "env PUBLISH_FORMATS" in out
    for line in ("0  the run did its work", "1  the store could not publish", "2  invalid settings",
                 "3  stopped by a rate limit"):
        assert line in out, line


def test_compact_on_a_folder_without_a_store_refuses_and_makes_nothing(tmp_path: Path) -> None:
    """A mistyped --store for compact is an error like for status or verify, not a new empty dataset."""
    typo = tmp_path / "my-splatz"
    done = run_cli(tmp_path, "compact", "--store", f"local:{typo}")
    assert done.returncode == 1 and f"no local store at {typo}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not typo.exists()
