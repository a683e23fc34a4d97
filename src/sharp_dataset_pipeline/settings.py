"""Settings, parsed once when the CLI asks, from CLI flags > environment > ``.env`` > defaults.

Field names are the predecessor's environment variable names in lower case (pydantic-settings
matches them case-insensitively), so ``MAX_IMAGES=10`` and ``--max-images 10`` mean the same.
Secrets are ``SecretStr``: they never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

import difflib
import getpass
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError
from .redact import env_secrets, redact

SECRET_FIELDS = frozenset({"unsplash_access_key", "hf_token"})
SMALL_PLY_KEEP = 20000  # Gaussians in the small PLY that is shared (GSPLAT_FILTER_VISIBILITY)


def default_client_id() -> str:
    """Stable across restarts: host name + user, hashed short so it is safe in file names."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    host = socket.gethostname() or "host"
    digest = hashlib.sha256(f"{host}/{user}".encode()).hexdigest()[:8]
    safe_host = "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:24]
    return f"{safe_host}-{digest}"


class Settings(BaseSettings):
    """Every option of ``sharp-dataset run``; see the README's table for meanings and defaults."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        validate_default=True, populate_by_name=True,
    )

    # What to read, where to write, what predicts.
    source: str = ""
    store: str = ""
    predictor: str = ""
    sharp_backend: Literal["auto", "sharp", "sharp-cli", "planar"] = "auto"
    # How the stages run: threads on this machine, or Ray Data (a local Ray, or RAY_ADDRESS's cluster).
    executor: Literal["thread", "ray"] = "thread"
    ray_address: str = ""
    ray_num_gpus: float | None = Field(default=None, ge=0, le=1024)
    # Photos per call of a Ray predictor actor; unset: 4 of the predictor's batches.
    ray_predict_rows: int | None = Field(default=None, ge=1, le=4096)
    client_id: str = Field(default_factory=default_client_id)
    run_id: str = Field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))
    # Unset: ``runs`` beside a local store's folder (one filesystem, so its hard links of the run
    # files cost nothing), ``runs`` in the current folder for the hub store.
    runs_dir: Path = Path("runs")
    save_dir: Path | None = None
    local_store_dir: Path = Path("sharp-dataset-out")

    # Scan limits.
    max_images: int = Field(default=0, ge=0)
    max_scan: int = Field(default=0, ge=0)
    range_size: int = Field(default=300, ge=1, le=100_000)
    range_locks_enabled: bool = True
    # Accepted for compatibility; leases and done markers now live under the store's .coord/.
    range_locks_dir: str = "ranges/locks"
    range_done_dir: str = "ranges/done"
    range_lock_stale_secs: float = Field(default=1800.0, gt=0)
    range_lock_min_images: int = Field(default=30, ge=0)
    max_item_attempts: int = Field(default=3, ge=1)
    # Reprocess on purpose: "failed" items, items "model-changed" (made by another predictor or model
    # version than this run's), or "all"; "" (default) skips every item already done for this model.
    redo: Literal["", "failed", "model-changed", "all"] = ""

    # Queues / concurrency.
    download_queue_max: int = Field(default=8, ge=1)
    upload_queue_max: int = Field(default=256, ge=1)
    upload_workers: int = Field(default=2, ge=1, le=64)
    download_workers: int = Field(default=4, ge=1, le=64)
    fetch_retries: int = Field(default=4, ge=1, le=20)
    fetch_timeout_secs: float = Field(default=300.0, gt=0)
    max_image_pixels: int = Field(default=120_000_000, ge=1)
    max_download_bytes: int = Field(default=200_000_000, ge=1)
    # Keep runs/<RUN_ID>/images and gaussians after publish? Unset: yes for the local store (its files
    # are hard links of them, so keeping costs nothing), no for the hub (66 MB per item would fill disks).
    keep_run_files: bool | None = None

    # Publishing.
    hf_upload: bool = True
    hf_repo_id: str = ""
    hf_repo_type: Literal["dataset", "model"] = "dataset"
    hf_public: bool = False
    hf_subdir: str = ""
    hf_use_locks: bool = True
    hf_locks_dir: str = "locks"
    hf_done_dir: str = "done"
    hf_lock_stale_secs: float = Field(default=1800.0, gt=0)
    hf_write_index: bool = True
    hf_index_repo_path: str = "data/train.jsonl"
    hf_index_flush_every: int = Field(default=20, ge=1)
    hf_index_flush_secs: float = Field(default=30.0, gt=0)
    # Unset: HF_INDEX_FLUSH_EVERY when that is set, else 32 (see run_config.batch_settings).
    hf_upload_batch_size: int | None = Field(default=None, ge=1, le=1000)
    hf_upload_batch_wait_ms: int = Field(default=0, ge=0)
    hf_commits_per_hour: int = Field(default=100, ge=1, le=10_000)
    hf_compact_every_shards: int = Field(default=256, ge=0)
    hf_endpoint: str = ""
    hf_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("hf_token", "huggingface_hub_token", "hugging_face_hub_token")
    )

    # Unsplash.
    unsplash_access_key: SecretStr | None = None
    unsplash_app_name: str = "sharp_dataset"
    unsplash_api_base: str = "https://api.unsplash.com"
    unsplash_queries: str = "landscape,architecture,interior,street,nature,city,room,mountain"
    unsplash_order_by: str = "relevant"
    unsplash_content_filter: Literal["low", "high"] = "high"
    unsplash_orientation: str = ""
    unsplash_color: str = ""
    unsplash_details: Literal["auto", "always", "never"] = "auto"
    unsplash_image_width: int = Field(default=1536, ge=0)
    unsplash_image_quality: int = Field(default=90, ge=1, le=100)
    per_page: int = Field(default=30, ge=1)
    list_auto_seek: bool = True
    list_seek_back_pages: int = Field(default=2, ge=0, le=50)
    stop_on_rate_limit: bool = True

    # SHARP / ml-sharp.
    ml_sharp_dir: str = ""
    conda_env_name: str = "sharp"
    sharp_device: str = "default"
    sharp_verbose: bool = False
    sharp_input_dir: str = ""
    sharp_checkpoint_path: str = ""
    sharp_batch_size: int = Field(default=1, ge=1, le=64)
    sharp_precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    sharp_timeout_secs: float = Field(default=1800.0, gt=0)
    # Untrained weights, for benchmarks/bench_gpu.py only: `run` refuses it (see app.py).
    sharp_random_weights: bool = False
    planar_resolution: int = Field(default=256, ge=8, le=4096)

    # Pause / stop control.
    control_dir: Path | None = None
    pause_file: str = "PAUSE"
    stop_file: str = "STOP"
    stop_drain_secs: float = Field(default=120.0, ge=0)

    # Observability.
    log_gpu_mem: bool = False
    gpu_mem_log_secs: float = Field(default=5.0, gt=0)
    heartbeat_secs: float = Field(default=30.0, gt=0)
    progress: Literal["auto", "rich", "plain", "none"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # gsplat.org sharing (off by default; see README).
    gsplat_upload: bool = False
    gsplat_base: str = "https://gsplat.org"
    gsplat_expiration_type: str = "1week"
    gsplat_filter_visibility: int = Field(default=SMALL_PLY_KEEP, ge=0)  # 0: the default
    splat_transform_bin: str = ""
    gsplat_use_small_ply: bool = True
    gsplat_timeout_secs: float = Field(default=300.0, gt=0)
    # Only for tests against a loopback emulator: allow a private/loopback GSPLAT_BASE.
    gsplat_allow_private_base: bool = False

    # How a dataset is laid out: "" = the dataset's own (a new one: factories.NEW_DATASET_LAYOUT), "shards" (WebDataset
    # tars + a Parquet index), "files" (the predecessor's per-item files). See README: layouts.
    layout: str = ""
    # What is published per item (see README: formats and sizes); empty: by layout (shards: spz,preview;
    # files: ply,preview).
    publish_formats: str = ""
    # SPZ container: 4 (zstd streams; what Niantic's library and splat-transform write) or 3 (one gzip
    # stream, for viewers that predate version 4). Written in process; see README: formats.
    spz_version: int = Field(default=4, ge=3, le=4)
    preview_long_side: int = Field(default=512, ge=16, le=4096)
    format_timeout_secs: float = Field(default=600.0, gt=0)

    @field_validator("run_id", "client_id")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not value or any(c in value for c in "/\\\0") or value in {".", ".."}:
            raise ValueError("must be a non-empty name without slashes")
        return value

    @field_validator("hf_subdir")
    @classmethod
    def _subdir(cls, value: str) -> str:
        # Checked here as every repo path is at publish time: a bad one would fail every item, one by one.
        from .errors import StoreError
        from .publish.layout import check_repo_path

        if value and value.strip("/") != "":
            try:
                check_repo_path(value.strip("/"))
            except StoreError:
                raise ValueError("must be a relative folder inside the dataset (no '..', no leading dot)") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("publish_formats")
    @classmethod
    def _formats(cls, value: str) -> str:
        from .splat.formats import parse_formats

        if not value.strip():
            return ""
        try:
            return ",".join(parse_formats(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("layout")
    @classmethod
    def _layout(cls, value: str) -> str:
        from .publish.layout_choice import check_layout

        try:
            return check_layout(value.strip().lower())
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("hf_index_repo_path")
    @classmethod
    def _index_path(cls, value: str) -> str:
        if not value.endswith(".jsonl") or value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a relative path ending in .jsonl, e.g. data/train.jsonl")
        return value

    @model_validator(mode="after")
    def _runs_beside_the_store(self) -> Settings:
        if "runs_dir" not in self.model_fields_set:
            local = self.local_store_root()
            if local is not None:
                self.runs_dir = local.parent / "runs"
        return self

    # Derived values: one place decides them.
    def formats_for_layout(self, layout_name: str) -> str:
        """PUBLISH_FORMATS when set, else the default of the dataset's layout (shards: spz,preview)."""
        return self.publish_formats or ("ply,preview" if layout_name == "files" else "spz,preview")

    def local_store_root(self) -> Path | None:
        """The folder of a ``local:`` store, None for the hub store."""
        kind, _, arg = self.resolved_store().partition(":")
        return Path(arg).expanduser() if kind == "local" and arg else None

    @property
    def run_dir(self) -> Path:
        return self.save_dir if self.save_dir is not None else self.runs_dir / self.run_id

    @property
    def control_path(self) -> Path:
        return self.control_dir if self.control_dir is not None else self.run_dir

    @property
    def lease_ttl_s(self) -> float:
        return self.range_lock_stale_secs if self.range_locks_enabled else self.hf_lock_stale_secs

    @property
    def small_ply_keep(self) -> int:
        """How many Gaussians the small (shared) PLY keeps."""
        return self.gsplat_filter_visibility or SMALL_PLY_KEEP

    def secret(self, name: str) -> str:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else ""

    def resolved_source(self) -> str:
        """The seed defaulted to Unsplash search; with no key we run the bundled samples instead."""
        if self.source:
            return self.source
        return "search" if self.secret("unsplash_access_key") else "samples"

    def resolved_store(self) -> str:
        if self.store:
            return self.store
        if self.hf_upload and self.hf_repo_id:
            return f"hf:{self.hf_repo_id}"
        return f"local:{self.local_store_dir}"

    def resolved_predictor(self) -> str:
        return self.predictor or self.sharp_backend


def _describe_error(err: dict[str, Any], secrets: list[str]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "settings"
    name = loc.upper()
    msg = err.get("msg", "invalid value")
    if loc.lower() in SECRET_FIELDS:
        return f"{name}: {msg}"
    value = err.get("input")
    # A key pasted into the wrong setting is still a key: the value shown goes through the redactor.
    shown = f" (got {redact(repr(value), secrets)})" if isinstance(value, (str, int, float)) else ""
    return f"{name}: {msg}{shown}"


def load_settings(overrides: dict[str, Any] | None = None, env_file: str | None = ".env") -> Settings:
    """Parse settings once; invalid values become one ConfigError line per bad setting."""
    clean = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return Settings(_env_file=env_file, **clean)  # type: ignore[call-arg]
    except ValidationError as exc:
        secrets = (env_secrets(os.environ) + env_secrets(_env_file_values(env_file))
                   + [str(v) for k, v in clean.items() if k in SECRET_FIELDS])
        lines = [_describe_error(dict(e), secrets) for e in exc.errors()]
        raise ConfigError("invalid setting: " + "; ".join(lines)) from None


def _env_file_values(env_file: str | None) -> dict[str, str]:
    """NAME -> value of a .env file's plain lines (enough to know which values are secrets)."""
    if not env_file:
        return {}
    try:
        text = Path(env_file).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    pairs = (line.removeprefix("export ").split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip().strip("'\"") for k, v in pairs}


def _known_names() -> set[str]:
    names = set(Settings.model_fields)
    for info in Settings.model_fields.values():
        if isinstance(info.validation_alias, AliasChoices):
            names.update(str(c) for c in info.validation_alias.choices)
    return names


def near_miss_names(env_file: str | None) -> list[tuple[str, str]]:
    """Names in ``env_file`` that are no setting but look like a misspelt one: (name, likely setting).

    Settings ignore unknown names (a .env is often shared with other tools), so a typo such as
    ``MAX_IMAGE=2`` would otherwise change nothing without a word.
    """
    if not env_file or not Path(env_file).is_file():
        return []
    from dotenv import dotenv_values

    known = _known_names()
    misses = []
    for name in dotenv_values(env_file):
        key = name.lower()
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
        if close:
            misses.append((name, close[0].upper()))
    return misses
