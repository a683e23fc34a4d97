"""The CLI explains itself: --help lists every run option with its environment name."""

from __future__ import annotations

from click.testing import CliRunner

from sharp_dataset_pipeline.cli import main


def test_run_help_explains_options() -> None:
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    for text in ("--source", "--store", "--predictor", "--max-images", "--summary-json", "STOP", "planar",
                 "env MAX_IMAGES", "unsplash-list"):
        assert text in result.output, text


def test_unknown_source_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(main, ["run", "--source", "ftp:x", "--predictor", "planar",
                                       "--store", f"local:{tmp_path}/o", "--run-id", "t"],
                                catch_exceptions=False)
    assert result.exit_code == 2
    assert "unknown source" in result.output
