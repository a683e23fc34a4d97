"""Settings: the predecessor's environment names, flags over env, one clear line per bad value."""

from __future__ import annotations

import pytest

from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.settings import load_settings

SEED_NAMES = [
    "UNSPLASH_ACCESS_KEY", "UNSPLASH_APP_NAME", "SOURCE", "PER_PAGE", "LIST_AUTO_SEEK", "LIST_SEEK_BACK_PAGES",
    "STOP_ON_RATE_LIMIT", "MAX_SCAN", "MAX_IMAGES", "ML_SHARP_DIR", "CONDA_ENV_NAME", "SHARP_DEVICE",
    "SHARP_VERBOSE", "SHARP_INPUT_DIR", "DOWNLOAD_QUEUE_MAX", "UPLOAD_QUEUE_MAX", "UPLOAD_WORKERS", "HF_UPLOAD",
    "HF_REPO_ID", "HF_REPO_TYPE", "HF_SUBDIR", "HF_USE_LOCKS", "HF_LOCKS_DIR", "HF_DONE_DIR", "HF_LOCK_STALE_SECS",
    "HF_WRITE_INDEX", "HF_INDEX_REPO_PATH", "HF_INDEX_FLUSH_EVERY", "HF_INDEX_FLUSH_SECS", "GSPLAT_UPLOAD",
    "GSPLAT_BASE", "GSPLAT_EXPIRATION_TYPE", "GSPLAT_FILTER_VISIBILITY", "SPLAT_TRANSFORM_BIN",
    "GSPLAT_USE_SMALL_PLY", "RANGE_LOCKS_ENABLED", "RANGE_LOCKS_DIR", "RANGE_DONE_DIR", "RANGE_LOCK_STALE_SECS",
    "RANGE_SIZE", "RANGE_LOCK_MIN_IMAGES", "CONTROL_DIR", "PAUSE_FILE", "STOP_FILE", "LOG_GPU_MEM",
]


def test_every_seed_environment_name_is_a_setting() -> None:
    from sharp_dataset_pipeline.settings import Settings

    fields = set(Settings.model_fields)
    missing = [n for n in SEED_NAMES if n.lower() not in fields]
    assert not missing, missing


def test_environment_is_read_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_IMAGES", "7")
    monkeypatch.setenv("RANGE_SIZE", "50")
    s = load_settings({"range_size": 10}, env_file=None)
    assert s.max_images == 7 and s.range_size == 10


def test_env_file_is_read(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    env = tmp_path / ".env"
    env.write_text("MAX_SCAN=123\nHF_REPO_ID=me/splats\n")
    s = load_settings({}, env_file=str(env))
    assert s.max_scan == 123 and s.resolved_store() == "hf:me/splats"


def test_bad_values_name_the_setting_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPLOAD_WORKERS", "0")
    monkeypatch.setenv("HF_REPO_TYPE", "space")
    with pytest.raises(ConfigError) as err:
        load_settings({}, env_file=None)
    text = str(err.value)
    assert "UPLOAD_WORKERS" in text and "HF_REPO_TYPE" in text


def test_defaults_without_accounts_use_samples_and_local_store() -> None:
    s = load_settings({}, env_file=None)
    assert s.resolved_source() == "samples"
    assert s.resolved_store().startswith("local:")
    assert "secret" not in repr(s).lower() or s.unsplash_access_key is None
