"""Every file of a published local store gets the mode the user's umask asks for (0644 under 022),
so a web server or a group that can read the photos can read the splats and previews too."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from e2e_utils import cli_cmd, cli_env, make_photos, read_rows

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_every_published_file_has_the_umask_mode(tmp_path: Path, umask: int, mode: int) -> None:
    make_photos(tmp_path / "photos", 3, seed=11)
    done = subprocess.run(
        cli_cmd("run", "--source", "folder:photos", "--predictor", "planar", "--store", "local:out",
                "--run-id", "r1", "--planar-resolution", "32"),
        cwd=tmp_path, env=cli_env(PUBLISH_FORMATS="ply,preview,small.ply,spz"), capture_output=True, text=True,
        timeout=300, umask=umask,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = tmp_path / "out"
    rows = read_rows(store)
    assert len(rows) == 3
    published = {p for p in store.rglob("*") if p.is_file() and not p.relative_to(store).parts[0] == ".coord"}
    suffixes = {p.name.split(".", 1)[1] for p in published if p.parent.parent.name == "folder"}
    assert {"jpg", "ply", "preview.webp", "small.ply", "spz"} <= suffixes, suffixes
    modes = {p.relative_to(store).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in published}
    assert modes and set(modes.values()) == {mode}, {k: oct(v) for k, v in modes.items() if v != mode}
