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
    token = "hf_SettingsCanary0123456789abcdef"
    key = "unsplashSettingsCanaryKey42"
    monkeypatch.setenv("UNSPLASH_ACCESS_KEY", key)
    monkeypatch.setenv("UPLOAD_WORKERS", "0")
    monkeypatch.setenv("HF_REPO_TYPE", "space")
    monkeypatch.setenv("MAX_SCAN", key)  # the key pasted into the wrong line of a .env file
    monkeypatch.setenv("MAX_IMAGES", token)  # likewise the token
    with pytest.raises(ConfigError) as err:
        load_settings({"hf_token": 918273645546372819}, env_file=None)  # a secret that is itself bad
    text = str(err.value)
    for name in ("UPLOAD_WORKERS", "HF_REPO_TYPE", "MAX_SCAN", "MAX_IMAGES", "HF_TOKEN"):
        assert name in text, (name, text)
    assert "(got 0)" in text or "(got '0')" in text, text  # ordinary bad values are still shown
    assert "'space'" in text, text
    for secret in (token, key, "918273645546372819"):
        assert secret not in text, (secret, text)


def test_defaults_without_accounts_use_samples_and_local_store(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SOURCE", "STORE", "HF_REPO_ID", "HF_UPLOAD", "PREDICTOR", "SHARP_BACKEND", "LOCAL_STORE_DIR"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings({}, env_file=None)
    assert s.unsplash_access_key is None and s.hf_token is None
    # The README's promise, spelled out here rather than derived from the settings code.
    assert s.resolved_source() == "samples"
    assert s.resolved_store() == "local:sharp-dataset-out"
    assert s.resolved_predictor() == "auto"
    # With an account the defaults change, and the key shows in no repr.
    monkeypatch.setenv("UNSPLASH_ACCESS_KEY", "unsplashDefaultsCanary77")
    monkeypatch.setenv("HF_REPO_ID", "me/splats")
    with_accounts = load_settings({}, env_file=None)
    assert with_accounts.resolved_source() == "search"
    assert with_accounts.resolved_store() == "hf:me/splats"
    assert with_accounts.secret("unsplash_access_key") == "unsplashDefaultsCanary77"
    assert "unsplashDefaultsCanary77" not in repr(with_accounts) + str(with_accounts)


def test_layout_setting_and_the_formats_that_follow_it(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings({}, env_file=None)
    assert s.layout == ""
    assert s.formats_for_layout("shards") == "spz,preview"
    assert s.formats_for_layout("files") == "ply,preview"
    monkeypatch.setenv("LAYOUT", "files")
    monkeypatch.setenv("PUBLISH_FORMATS", "ply,spz")
    s = load_settings({}, env_file=None)
    assert s.layout == "files"
    assert s.formats_for_layout("shards") == "ply,spz"  # an explicit PUBLISH_FORMATS wins
    s = load_settings({"layout": "shards", "publish_formats": "spz"}, env_file=None)
    assert s.layout == "shards" and s.formats_for_layout("files") == "spz"
    monkeypatch.setenv("LAYOUT", "tiles")
    with pytest.raises(ConfigError, match="LAYOUT"):
        load_settings({}, env_file=None)
