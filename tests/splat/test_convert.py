"""The splat-transform subprocess: locating it, failure reasons, atomic output, JSON readers.

Failure paths run real processes: small shell scripts standing in for the tool (they exit with an
error, hang, die by a signal, print junk). The rest runs the pinned splat-transform from
``node_modules`` and is skipped, with the reason, only when it is not installed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from sharp_dataset_pipeline.errors import ConfigError, PermanentError, TransientError
from sharp_dataset_pipeline.splat import convert as cv
from sharp_dataset_pipeline.splat.gaussians import Gaussians
from sharp_dataset_pipeline.splat.ply import write_ply

REPO = Path(__file__).resolve().parents[2]


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def real_tool() -> cv.SplatTransform:
    try:
        return cv.locate_splat_transform("", search_roots=[REPO])
    except ConfigError as exc:
        pytest.skip(f"splat-transform is not installed (run `npm ci` in the repository root): {exc}")


def _small_scene(n: int = 600) -> Gaussians:
    rng = np.random.default_rng(3)
    v = rng.standard_normal((n, 14)).astype(np.float32)
    v[:, 2] = rng.uniform(1, 5, n)
    v[:, 7:10] = rng.normal(-4, 0.3, (n, 3))
    return Gaussians(vertices=v, focal_px=500.0, width=320, height=240)


# -- locating -------------------------------------------------------------------------------------


def test_an_explicit_path_wins_and_must_exist(tmp_path):
    tool = _script(tmp_path / "my-st", "exit 0")
    assert cv.locate_splat_transform(str(tool)).argv == (str(tool),)
    with pytest.raises(ConfigError, match="not a file"):
        cv.locate_splat_transform(str(tmp_path / "missing" / "st"))


def test_a_bare_override_name_is_looked_up_on_path(tmp_path, monkeypatch):
    _script(tmp_path / "st-custom", "exit 0")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert cv.locate_splat_transform("st-custom").argv == (str(tmp_path / "st-custom"),)
    with pytest.raises(ConfigError, match="not on PATH"):
        cv.locate_splat_transform("st-nowhere-to-be-found")


def test_node_modules_comes_before_path_and_runs_under_its_own_node(tmp_path, monkeypatch):
    bin_dir = tmp_path / "proj" / "node_modules" / ".bin"
    bin_dir.mkdir(parents=True)
    cli = _script(tmp_path / "proj" / "cli.mjs", "exit 0")
    (bin_dir / "splat-transform").symlink_to(cli)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _script(elsewhere / "splat-transform", "exit 0")
    monkeypatch.setenv("PATH", f"{elsewhere}{os.pathsep}{os.environ['PATH']}")

    found = cv.locate_splat_transform("splat-transform", search_roots=[tmp_path / "proj"])
    assert found.origin == "node_modules" and found.argv == (str(bin_dir / "splat-transform"),)

    node = _script(bin_dir / "node", "exit 0")
    found = cv.locate_splat_transform("", search_roots=[tmp_path / "proj"])
    assert found.argv == (str(node), str(cli.resolve()))  # the pinned Node runs the tool's script

    found = cv.locate_splat_transform("", search_roots=[tmp_path / "empty"])
    assert found.origin == "PATH" and found.argv == (str(elsewhere / "splat-transform"),)


def test_missing_everywhere_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="npm ci"):
        cv.locate_splat_transform("", search_roots=[tmp_path])


# -- failures of the process ----------------------------------------------------------------------


def _fake(tmp_path: Path, body: str) -> cv.SplatTransform:
    return cv.SplatTransform((str(_script(tmp_path / "fake-st", body)),), "override")


def test_a_non_zero_exit_is_permanent_and_carries_the_tools_error_line(tmp_path):
    tool = _fake(tmp_path, 'echo "  ✗ Error: settings.tonemapping must be one of: none" >&2\n'
                           'echo "    at main (cli.mjs:1:1)" >&2\nexit 1')
    with pytest.raises(PermanentError) as info:
        cv.run_splat_transform(tool, ["--info", "json"], what="item x: .spz")
    assert info.value.reason == "splat_transform_failed"
    assert "settings.tonemapping must be one of" in str(info.value) and "item x: .spz" in str(info.value)
    assert "at main" not in str(info.value)


def test_a_timeout_is_transient_and_kills_the_process(tmp_path):
    marker = tmp_path / "still-running"
    tool = _fake(tmp_path, f"sleep 30\ntouch {marker}")
    with pytest.raises(TransientError) as info:
        cv.run_splat_transform(tool, [], timeout_s=0.5)
    assert info.value.reason == "splat_transform_timeout"
    assert not marker.exists()


def test_death_by_signal_is_transient(tmp_path):
    tool = _fake(tmp_path, "kill -9 $$")
    with pytest.raises(TransientError) as info:
        cv.run_splat_transform(tool, [])
    assert info.value.reason == "splat_transform_killed" and "SIGKILL" in str(info.value)


def test_an_unstartable_tool_is_a_config_error(tmp_path):
    path = tmp_path / "not-executable"
    path.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(ConfigError, match="cannot start"):
        cv.run_splat_transform(cv.SplatTransform((str(path),), "override"), [])


def test_junk_instead_of_json_is_a_clear_error(tmp_path):
    tool = _fake(tmp_path, "echo 'progress 50%'")
    with pytest.raises(PermanentError) as info:
        cv.read_info(tool, tmp_path / "x.ply")
    assert info.value.reason == "splat_transform_bad_output"


def test_convert_refuses_short_options(tmp_path):
    tool = _fake(tmp_path, "exit 0")
    with pytest.raises(ValueError, match="long options"):
        cv.convert(tool, tmp_path / "a.ply", tmp_path / "a.spz", options=["-w"])


def test_convert_leaves_nothing_behind_when_the_tool_fails(tmp_path):
    # The stand-in writes half a file at the output path it was given, then fails.
    tool = _fake(tmp_path, 'for a in "$@"; do last="$a"; done\nprintf partial > "$last"\n'
                           'echo "Error: disk full" >&2\nexit 1')
    (tmp_path / "out").mkdir()
    with pytest.raises(PermanentError, match="disk full"):
        cv.convert(tool, tmp_path / "a.ply", tmp_path / "out" / "a.spz")
    assert list((tmp_path / "out").iterdir()) == []


def test_convert_passes_absolute_paths_and_long_options_only(tmp_path, monkeypatch):
    log = tmp_path / "argv.txt"
    tool = _fake(tmp_path, f'printf "%s\\n" "$@" > {log}\nfor a in "$@"; do :; done\n'
                           'out=$(sed -n 5p ' + str(log) + ')\nprintf data > "$out"')
    (tmp_path / "-tricky.ply").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    cv.convert(tool, Path("-tricky.ply"), Path("out.spz"), options=["--spz-version", "3"])
    args = log.read_text().splitlines()
    assert args[:3] == ["--quiet", "--no-tty", "--overwrite"]
    assert args[3] == str(tmp_path / "-tricky.ply") and Path(args[4]).is_absolute()
    assert args[4].endswith("out.spz") and args[5:] == ["--spz-version", "3"]
    assert all(not a.startswith("-") or a.startswith("--") for a in args)
    assert (tmp_path / "out.spz").read_bytes() == b"data"


# -- the real tool ----------------------------------------------------------------------------


def test_the_installed_tool_is_the_pinned_version(real_tool):
    assert cv.tool_version(real_tool) == cv.PINNED_VERSION


def test_info_and_stats_read_a_sharp_ply(real_tool, tmp_path):
    g = _small_scene()
    write_ply(g, tmp_path / "s.ply")
    info = cv.read_info(real_tool, tmp_path / "s.ply")
    assert info["numGaussians"] == g.count and info["shBands"] == 0
    stats = cv.column_stats(cv.read_stats(real_tool, tmp_path / "s.ply"))
    # splat-transform reports activated values (opacity through a sigmoid, scales through exp);
    # its mean is the activation of the mean stored value.
    raw_mean = float(g.vertices[:, 6].astype(np.float64).mean())
    assert stats["opacity"].mean == pytest.approx(1 / (1 + np.exp(-raw_mean)), abs=1e-5)
    assert stats["x"].min == pytest.approx(float(g.vertices[:, 0].min()), abs=1e-5)
    assert stats["scale_0"].max == pytest.approx(float(np.exp(g.vertices[:, 7].max())), rel=1e-4)
    assert all(s.nan_count == 0 and s.inf_count == 0 for s in stats.values())


def test_a_truncated_file_fails_to_read(real_tool, tmp_path):
    g = _small_scene()
    write_ply(g, tmp_path / "s.ply")
    cv.convert(real_tool, tmp_path / "s.ply", tmp_path / "s.spz")
    data = (tmp_path / "s.spz").read_bytes()
    (tmp_path / "cut.spz").write_bytes(data[: len(data) // 2])
    with pytest.raises(PermanentError) as info:
        cv.read_info(real_tool, tmp_path / "cut.spz")
    assert info.value.reason == "splat_transform_failed"
