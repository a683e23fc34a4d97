"""Stores for the ops tests, made by the real pipeline (folder source, planar predictor, local store).

The pipeline runs once per session into a template; every test gets its own copy to damage.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.e2e_utils import cli_env, make_photos, run_cli

PHOTOS = 6


@pytest.fixture(scope="session")
def pipeline_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with ``photos/`` (6 photos), ``store/`` (all published) and ``runs/R1``."""
    work = tmp_path_factory.mktemp("ops_template")
    make_photos(work / "photos", PHOTOS, seed=7)
    proc = run_cli(work, "run", "--source", "folder:photos", "--predictor", "planar", "--store", "local:store",
                   "--run-id", "R1", "--client-id", "alpha", "--planar-resolution", "48", "--batch-size", "4",
                   LAYOUT="files")  # the per-item layout; the sharded one has its own tests
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


@pytest.fixture
def workspace(pipeline_template: Path, tmp_path: Path) -> Path:
    """A private copy of the template workspace."""
    dst = tmp_path / "ws"
    shutil.copytree(pipeline_template, dst)
    return dst


@pytest.fixture
def run_ops() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs ``python -m sharp_dataset_pipeline.ops_cli ARGS`` in a folder (the real command line)."""

    def run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sharp_dataset_pipeline.ops_cli", *args], cwd=cwd,
                              env=cli_env(), capture_output=True, text=True, timeout=timeout)

    return run
