"""The dataset card follows what was published, through the real CLI, on the local store and the
Hub emulator: the publish that brings a new source or predictor refreshes it (in the same commit
on the hub), compaction brings it up to date, and a planar-only dataset never claims SHARP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_utils import make_photos, run_cli

from emulators.hub import HubEmulator
from sharp_dataset_pipeline.publish.card import APPLE_NOTICE, render_card

TOKEN = "hf_cardrefreshtoken0123456789"


@pytest.fixture(scope="module")
def hub() -> Iterator[HubEmulator]:
    with HubEmulator() as emulator:
        yield emulator


def _env(hub: HubEmulator) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _card(kind: str, cwd: Path, hub: HubEmulator, repo: str) -> str:
    if kind == "local":
        return (cwd / "store" / "README.md").read_text(encoding="utf-8")
    return hub.files(repo)["README.md"].decode("utf-8")


def _assert_planar_card(card: str) -> None:
    assert "Sources: folder." in card and "Sources: none yet." not in card
    assert "Made with: planar" in card and "**These splats were not made with SHARP**" in card
    assert APPLE_NOTICE not in card and "research use only" not in card
    assert "with Apple's SHARP model" not in card and "\n- sharp\n" not in card


@pytest.mark.parametrize("kind", ["local", "hub"])
def test_card_is_refreshed_at_publish_and_compact(kind: str, hub: HubEmulator, tmp_path: Path) -> None:
    repo = f"card/{kind}"
    store, env = ("local:store", {}) if kind == "local" else (f"hf:{repo}", _env(hub))
    make_photos(tmp_path / "photos", 3, seed=31)
    proc = run_cli(tmp_path, "run", "--source", "folder:photos", "--predictor", "planar", "--store", store,
                   "--planar-resolution", "24", **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_planar_card(_card(kind, tmp_path, hub, repo))
    if kind == "hub":  # written at open, then refreshed inside the publish commit: no commit of its own
        with_card = [c.title for c in hub.history(repo) if "README.md" in c.added]
        assert len(with_card) == 2 and "card" in with_card[0] and "card" not in with_card[1], with_card
        assert any(f.endswith(".jsonl") for c in hub.history(repo) if "README.md" in c.added for f in c.added)
    # A stale generated card (as older versions left it) is brought up to date by compaction.
    stale = render_card(title="SHARP Gaussian splats", sources=[], index_glob="data/train*.jsonl")
    if kind == "local":
        (tmp_path / "store" / "README.md").write_text(stale, encoding="utf-8")
    else:
        from huggingface_hub import HfApi

        HfApi(endpoint=hub.url, token=TOKEN).upload_file(path_or_fileobj=stale.encode(), path_in_repo="README.md",
                                                         repo_id=repo, repo_type="dataset")
    assert "Sources: none yet." in _card(kind, tmp_path, hub, repo)
    proc = run_cli(tmp_path, "compact", "--store", store, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_planar_card(_card(kind, tmp_path, hub, repo))


def test_a_hand_written_card_is_kept(tmp_path: Path) -> None:
    make_photos(tmp_path / "photos", 2, seed=32)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "README.md").write_text("# My own card\n", encoding="utf-8")
    proc = run_cli(tmp_path, "run", "--source", "folder:photos", "--predictor", "planar", "--store", "local:store",
                   "--planar-resolution", "24")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "store" / "README.md").read_text(encoding="utf-8") == "# My own card\n"
