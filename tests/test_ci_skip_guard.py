"""The CI skip guard (tests/ci_skip_guard.py), run on small test files in a separate pytest process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ci_skip_guard import ALLOWED_SKIPS, AllowedSkip, is_allowed

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

FILES = {
    "test_unlisted.py": "import pytest\n\ndef test_ok():\n    pass\n\n"
                        "def test_tool_gone():\n    pytest.skip('some-tool is missing')\n",
    "test_module_skip.py": "import pytest\npytest.skip('whole module off', allow_module_level=True)\n",
    "test_xfail_only.py": "import pytest\n\n@pytest.mark.xfail(reason='known')\ndef test_known():\n"
                          "    assert False\n\ndef test_ok():\n    pass\n",
}


def _run(tmp_path: Path, name: str, ci: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / name).write_text(FILES[name], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "ci_skip_guard",
                           "--rootdir", str(tmp_path), str(tmp_path / name)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_an_unlisted_skip_fails_the_ci_run_and_is_named(tmp_path: Path) -> None:
    res = _run(tmp_path, "test_unlisted.py", ci=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 passed, 1 skipped" in res.stdout
    assert "test_unlisted.py::test_tool_gone: Skipped: some-tool is missing" in res.stdout, res.stdout


def test_outside_ci_a_skip_is_only_a_skip(tmp_path: Path) -> None:
    res = _run(tmp_path, "test_unlisted.py", ci=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed, 1 skipped" in res.stdout and "ALLOWED_SKIPS" not in res.stdout


def test_a_module_level_skip_counts_too(tmp_path: Path) -> None:
    res = _run(tmp_path, "test_module_skip.py", ci=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "whole module off" in res.stdout


def test_xfail_is_not_a_skip(tmp_path: Path) -> None:
    res = _run(tmp_path, "test_xfail_only.py", ci=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed, 1 xfailed" in res.stdout


def test_matching_needs_both_the_place_and_the_reason() -> None:
    entry = AllowedSkip("tests/a.py::test_b", "no disk", "why")
    assert is_allowed("tests/a.py::test_b[1]", "Skipped: no disk here", (entry,))
    assert not is_allowed("tests/a.py::test_c", "Skipped: no disk here", (entry,))
    assert not is_allowed("tests/a.py::test_b", "Skipped: not installed", (entry,))


@pytest.mark.parametrize("entry", ALLOWED_SKIPS, ids=lambda e: e.where)
def test_every_allowed_skip_still_exists_with_its_reason(entry: AllowedSkip) -> None:
    path, _, test = entry.where.partition("::")
    source = (REPO / path).read_text(encoding="utf-8")
    assert entry.reason.split("`")[0] in source, f"{path} no longer skips with {entry.reason!r}: drop the entry"
    assert not test or f"def {test}" in source, f"{entry.where} no longer exists: drop the entry"
    assert entry.why
