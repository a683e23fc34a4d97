"""Settings are parsed once into the option groups each stage takes whole (``run_config``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sharp_dataset_pipeline.pipeline.options import BatchOptions, ClaimOptions, FetchPoolOptions, RunOptions
from sharp_dataset_pipeline.pipeline.publisher import PublishOptions
from sharp_dataset_pipeline.publish.batch_sizing import BatchPolicy
from sharp_dataset_pipeline.run_config import format_options, run_options, share_file_options
from sharp_dataset_pipeline.settings import load_settings


def test_each_group_carries_its_settings(tmp_path: Path) -> None:
    settings = load_settings({"store": f"local:{tmp_path / 'store'}", "max_images": 7, "redo": "failed",
                              "download_workers": 3, "fetch_retries": 5, "fetch_timeout_secs": 9.0,
                              "upload_workers": 6, "hf_upload_batch_size": 11, "publish_formats": "spz",
                              "keep_run_files": False, "stop_drain_secs": 4.0, "hf_commits_per_hour": 42},
                             env_file=None)
    opts = run_options(settings)
    assert opts.claim == ClaimOptions(lease_ttl_s=1800.0, max_images=7, max_item_attempts=3, redo="failed")
    assert (opts.fetch.workers, opts.fetch.attempts, opts.fetch.timeout_s) == (3, 5, 9.0)
    assert (opts.post.workers, opts.post.formats.formats) == (6, ("spz",))
    assert opts.batch == BatchOptions(size=11, wait_s=1.0, keep_run_files=False,
                                      policy=BatchPolicy(commits_per_hour=42))
    assert opts.stop_drain_secs == 4.0 and opts.client_id == settings.client_id


@pytest.mark.parametrize(("visibility", "keep"), [(0, 20000), (500, 500)])
def test_the_small_ply_size_is_decided_once(visibility: int, keep: int) -> None:
    settings = load_settings({"gsplat_filter_visibility": visibility, "gsplat_use_small_ply": True}, env_file=None)
    assert format_options(settings).small_ply_keep == keep == share_file_options(settings).keep


def test_flat_names_land_in_their_group(tmp_path: Path) -> None:
    opts = RunOptions.of("c", tmp_path, "folder", batch_size=4, download_workers=2, max_item_attempts=5,
                         keep_run_files=False)
    assert opts.batch.size == 4 and opts.fetch == FetchPoolOptions(workers=2) and opts.claim.max_item_attempts == 5
    publish = PublishOptions.of("c", opts.claim, opts.batch)
    assert (publish.batch_size, publish.max_item_attempts, publish.delete_published_run_files) == (4, 5, True)
    with pytest.raises(TypeError, match="batch_sise"):
        RunOptions.of("c", tmp_path, "folder", batch_sise=4)
