"""What the maintenance commands print, through the real CLI: each message once, flags as they are."""

from __future__ import annotations

import subprocess
from pathlib import Path

from e2e_utils import make_photos, read_rows, run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_gc_compact_and_remove_print_each_message_once(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    store = f"local:{tmp_path / 'out'}"
    done = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", store,
                   "--planar-resolution", "32")
    assert done.returncode == 0, done.stderr
    victim = read_rows(tmp_path / "out")[0]["id"]
    for args, said in ((("gc",), "expired leases"), (("compact",), "compacted"),
                       (("remove", victim), "removed 1 items")):
        res = run_cli(tmp_path, *args, "--store", store)
        assert res.returncode == 0, res.stderr
        assert said in res.stdout
        both = (res.stdout + res.stderr).lower()
        assert both.count(said.lower()) == 1, both  # not once on stdout and again as an INFO log line


def test_share_help_does_not_call_missing_required_and_share_without_it_is_a_usage_error(tmp_path: Path) -> None:
    res = run_cli(tmp_path, "share", "--help")
    assert res.returncode == 0
    assert "--missing" in res.stdout and "[required]" not in res.stdout
    bare = run_cli(tmp_path, "share", "--store", f"local:{tmp_path / 'out'}")
    assert bare.returncode == 2
    assert "--missing" in bare.stderr


def test_make_test_reports_why_tests_were_skipped() -> None:
    dry = subprocess.run(["make", "-n", "test"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    pytest_lines = [line for line in dry.stdout.splitlines() if "-m pytest" in line]
    assert pytest_lines and all(" -rs" in line for line in pytest_lines), pytest_lines
