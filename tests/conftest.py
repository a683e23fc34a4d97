"""Fixtures shared by the whole test tree.

- Every test runs without tokens or keys in the environment and with a private ``HF_HOME``, so no test
  can reach a real account or read a developer's cache by accident.
- Hub clients (in process and the CLI subprocesses) run with ``HF_HUB_DISABLE_XET=1``: the loopback Hub
  speaks git-LFS for big files, not Xet, and the client would pick Xet whenever ``hf_xet`` is installed.
- Under ``CI=true`` every skip must be on ``ci_skip_guard.ALLOWED_SKIPS`` or the run fails.
- ``bad_inputs`` builds a folder of awkward image files, each paired with the outcome the decoder must
  give (``"ok"`` or a ``PermanentError`` reason); ``file_server`` is a started loopback file server.

This folder is put on ``sys.path`` by pytest (it has no ``__init__.py``), so tests import the
emulators as ``from emulators.files import FileServer``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulators.files import FileServer, bad_input_files

SECRET_ENV = ("HF_TOKEN", "HUGGINGFACE_HUB_TOKEN", "UNSPLASH_ACCESS_KEY")

# Under CI=true a skip not on its explicit allow-list fails the run (see ci_skip_guard.py).
pytest_plugins = ["ci_skip_guard"]


def pytest_configure(config: pytest.Config) -> None:
    # huggingface_hub reads HF_HUB_DISABLE_XET once, when first imported (test modules import it).
    os.environ["HF_HUB_DISABLE_XET"] = "1"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for name in SECRET_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")


@pytest.fixture
def files_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """LAYOUT=files, for the tests of the per-item files layout (a new dataset is sharded by default)."""
    monkeypatch.setenv("LAYOUT", "files")


@pytest.fixture
def bad_inputs(tmp_path: Path) -> Callable[[Path | None], dict[Path, str]]:
    """Builder: ``bad_inputs(folder=None)`` writes the bad-input set and returns path -> expected outcome."""

    def build(folder: Path | None = None) -> dict[Path, str]:
        folder = folder or tmp_path / "bad_inputs"
        folder.mkdir(parents=True, exist_ok=True)
        out = {}
        for name, (data, outcome) in bad_input_files().items():
            path = folder / name
            path.write_bytes(data)
            out[path] = outcome
        return out

    return build


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A started loopback ``FileServer`` (see ``emulators/files.py``), stopped after the test."""
    with FileServer() as server:
        yield server
