"""Where the run folder goes, through the real CLI: beside a local store by default, so the store's
hard links of the run files cost no disk; on another filesystem the run files are dropped once
published (copy, then drop) unless KEEP_RUN_FILES=1."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_utils import make_photos, read_rows, run_cli

# These tests are about the per-item files layout; the sharded layout (the default) has its own.
pytestmark = pytest.mark.usefixtures("files_layout")


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on another filesystem than tmp_path (/dev/shm is a tmpfs on Linux)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem (/dev/shm) to put the store on")
    folder = Path(tempfile.mkdtemp(prefix="sharp-runfolder-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run(cwd: Path, photos: Path, store: Path, *extra: str, **env: str):  # type: ignore[no-untyped-def]
    return run_cli(cwd, "run", "--source", f"folder:{photos}", "--predictor", "planar", "--store", f"local:{store}",
                   "--planar-resolution", "48", "--run-id", "r1", *extra, **env)


def test_the_run_folder_is_beside_a_local_store_and_its_files_are_the_stores(tmp_path: Path, other_fs: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    store = other_fs / "store"
    done = _run(tmp_path, photos, store)
    assert done.returncode == 0, done.stderr
    run_dir = other_fs / "runs" / "r1"
    assert f"folder {run_dir}" in done.stdout
    assert not (tmp_path / "runs").exists()  # not in the current folder, on the other disk
    rows = read_rows(store)
    assert len(rows) == 3
    kept = sorted((run_dir / "gaussians").glob("*.ply"))
    assert len(kept) == 3
    for row in rows:  # one inode for the run's file and the store's: keeping the run files is free
        published = store / row["ply_path"]
        assert (run_dir / "gaussians" / published.name).stat().st_ino == published.stat().st_ino
    assert not any(p.name == "runs" for p in store.iterdir())  # the store stays clean


def test_run_files_on_another_filesystem_are_dropped_once_published(tmp_path: Path, other_fs: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    store = other_fs / "store"
    done = _run(tmp_path, photos, store, RUNS_DIR=str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert "on another filesystem than the store" in done.stderr
    assert len(read_rows(store)) == 3 and len(list(store.rglob("*.ply"))) == 3
    assert list((tmp_path / "runs" / "r1" / "gaussians").glob("*.ply")) == []  # not twice on disk
    assert (tmp_path / "runs" / "r1" / "metrics.jsonl").is_file()  # the run's record stays
    again = _run(tmp_path, photos, tmp_path / "store2", "--run-id", "r2", RUNS_DIR=str(other_fs / "runs"),
                 KEEP_RUN_FILES="1")
    assert again.returncode == 0, again.stderr
    assert len(list((other_fs / "runs" / "r2" / "gaussians").glob("*.ply"))) == 3  # asked for: kept
