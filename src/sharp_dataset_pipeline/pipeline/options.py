"""The option groups of one run, each handed whole to the stage that uses it.

``run_config.build_run_options`` builds them once from ``Settings``; tests and benchmarks that
name options the way the settings do use ``RunOptions.of``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..publish.batch_sizing import BatchPolicy
from ..splat.formats import FormatOptions


@dataclass(frozen=True)
class ClaimOptions:
    """What a run takes on and how long it holds it (intake and publish both follow these)."""

    lease_ttl_s: float = 1800.0
    max_images: int = 0
    max_scan: int = 0
    max_item_attempts: int = 3
    redo: str = ""  # ``run --redo``: "", "failed", "model-changed" or "all"


@dataclass(frozen=True)
class FetchPoolOptions:
    """The fetch stage: its threads, the queue to the predictor, and what one download may be."""

    workers: int = 4
    queue_max: int = 8
    attempts: int = 4
    timeout_s: float = 300.0  # one URL's whole download, retries included
    max_pixels: int = 120_000_000
    max_bytes: int = 200_000_000


@dataclass(frozen=True)
class PostPoolOptions:
    """The post-process stage: its workers, the queue to the publisher, and what it writes."""

    workers: int = 2
    queue_max: int = 256
    fanout: bool = False
    formats: FormatOptions = FormatOptions(formats=("ply", "preview"))


@dataclass(frozen=True)
class BatchOptions:
    """The publish stage: batch size and wait, and whether run files stay once published."""

    size: int = 32
    wait_s: float = 1.0
    keep_run_files: bool = True
    # The sharded layout: batches sized from the store's commit budget (``publish/batch_sizing``);
    # None keeps ``size`` / ``wait_s`` (the files layout, and any store without a commit budget).
    policy: BatchPolicy | None = None


@dataclass(frozen=True)
class RunOptions:
    """Everything a ``Runner`` needs besides its parts (source, store, predictor)."""

    client_id: str
    run_dir: Path
    subdir: str
    claim: ClaimOptions = ClaimOptions()
    fetch: FetchPoolOptions = FetchPoolOptions()
    post: PostPoolOptions = PostPoolOptions()
    batch: BatchOptions = BatchOptions()
    stop_drain_secs: float = 120.0

    @classmethod
    def of(cls, client_id: str, run_dir: Path, subdir: str, **flat: Any) -> RunOptions:
        """Options from the settings' flat names (``batch_size=4, download_workers=2``), each put in
        its group; an unknown name is a ``TypeError``, as for any constructor."""
        groups: dict[str, dict[str, Any]] = {"claim": {}, "fetch": {}, "post": {}, "batch": {}}
        top: dict[str, Any] = {}
        for name, value in flat.items():
            if name == "stop_drain_secs":
                top[name] = value
                continue
            if name not in _FLAT_NAMES:
                raise TypeError(f"RunOptions.of() got an unexpected option {name!r}")
            group, field_name = _FLAT_NAMES[name]
            groups[group][field_name] = value
        built = {g: dataclasses.replace(getattr(cls, g), **kw) for g, kw in groups.items()}
        return cls(client_id, run_dir, subdir, **built, **top)


# The settings' names (see ``Settings``) for each group's fields.
_FLAT_NAMES: dict[str, tuple[str, str]] = {
    "lease_ttl_s": ("claim", "lease_ttl_s"), "max_images": ("claim", "max_images"),
    "max_scan": ("claim", "max_scan"), "max_item_attempts": ("claim", "max_item_attempts"),
    "redo": ("claim", "redo"),
    "download_workers": ("fetch", "workers"), "download_queue_max": ("fetch", "queue_max"),
    "fetch_retries": ("fetch", "attempts"), "fetch_timeout_s": ("fetch", "timeout_s"),
    "max_image_pixels": ("fetch", "max_pixels"),
    "max_download_bytes": ("fetch", "max_bytes"),
    "upload_workers": ("post", "workers"), "upload_queue_max": ("post", "queue_max"),
    "fanout": ("post", "fanout"), "formats": ("post", "formats"),
    "batch_size": ("batch", "size"), "batch_wait_s": ("batch", "wait_s"),
    "keep_run_files": ("batch", "keep_run_files"), "batch_policy": ("batch", "policy"),
}
