"""Turn settings into the parts of a run: a source, a store and a predictor.

Heavy or optional backends (Hub, Unsplash, SHARP) are imported only when asked for.
"""

from __future__ import annotations

import shutil
import threading
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .errors import ConfigError
from .predict.base import Predictor
from .settings import Settings
from .sources.base import Source
from .stores.base import Store

if TYPE_CHECKING:  # the backends load only when a run asks for them
    from .predict.sharp import SharpOptions
    from .sources.unsplash import UnsplashOptions
    from .stores.hub import HubOptions

UNSPLASH_KINDS = {"search": "search", "list": "list", "unsplash-search": "search", "unsplash-list": "list"}
UNSPLASH_PREFIXES = {"unsplash-topic": "topic", "unsplash-user": "user", "unsplash-collection": "collection"}


def samples_dir() -> Path:
    """The bundled sample photos (generated, CC0; see samples/LICENSE.txt)."""
    return Path(str(resources.files("sharp_dataset_pipeline") / "samples"))


def source_kind(spec: str) -> str:
    """The family of a source spec: samples, folder, manifest or unsplash (used for HF_SUBDIR)."""
    head = spec.split(":", 1)[0]
    if head in ("samples", "folder", "manifest"):
        return head
    if head in UNSPLASH_KINDS or head in UNSPLASH_PREFIXES:
        return "unsplash"
    raise ConfigError(
        f"SOURCE: unknown source {spec!r}; use samples, folder:PATH, manifest:PATH_OR_URL, "
        "unsplash-search, unsplash-list, unsplash-topic:SLUG, unsplash-user:NAME or unsplash-collection:ID"
    )


def default_subdir(settings: Settings) -> str:
    if settings.hf_subdir:
        return settings.hf_subdir.strip("/")
    kind = source_kind(settings.resolved_source())
    return "folder" if kind == "samples" else kind


def make_source(settings: Settings, client: httpx.Client) -> Source:
    spec = settings.resolved_source()
    kind = source_kind(spec)
    arg = spec.split(":", 1)[1] if ":" in spec else ""
    if kind == "samples":
        from .sources.folder import FolderSource

        return FolderSource(samples_dir(), range_size=settings.range_size, license="CC0-1.0")
    if kind == "folder":
        from .sources.folder import FolderSource

        root = Path(arg).expanduser()
        if not arg or not root.is_dir():
            raise ConfigError(f"SOURCE: folder {arg!r} does not exist or is not a directory")
        return FolderSource(root, range_size=settings.range_size)
    if kind == "manifest":
        from .sources.manifest import ManifestSource, local_manifest_path

        if not arg:
            raise ConfigError("SOURCE: manifest needs a path or URL, e.g. manifest:photos.tsv")
        local = local_manifest_path(arg)
        if local is not None and not local.is_file():  # said before a run folder or a store is made
            raise ConfigError(f"SOURCE: manifest {arg!r} does not exist or is not a file")
        return ManifestSource(arg, range_size=settings.range_size, client=client)
    return _make_unsplash(settings, spec, client)


def _make_unsplash(settings: Settings, spec: str, client: httpx.Client) -> Source:
    from .sources.unsplash import UnsplashSource

    head, _, arg = spec.partition(":")
    kind = UNSPLASH_KINDS.get(head) or UNSPLASH_PREFIXES[head]
    if kind in ("topic", "user", "collection") and not arg:
        raise ConfigError(f"SOURCE: {head} needs an argument, e.g. {head}:NAME")
    if not settings.secret("unsplash_access_key"):
        raise ConfigError("UNSPLASH_ACCESS_KEY: required for Unsplash sources (get one at unsplash.com/developers)")
    return UnsplashSource(unsplash_options(settings, kind, arg), client=client)


def unsplash_options(settings: Settings, kind: str, arg: str) -> UnsplashOptions:
    """The Unsplash source's options, read from the settings once."""
    from .sources.unsplash import ImageParams, UnsplashOptions

    return UnsplashOptions(
        kind, arg,
        access_key=settings.secret("unsplash_access_key"),
        app_name=settings.unsplash_app_name,
        api_base=settings.unsplash_api_base,
        range_size=settings.range_size,
        per_page=settings.per_page,
        queries=tuple(settings.unsplash_queries.split(",")),
        order_by=settings.unsplash_order_by,
        content_filter=settings.unsplash_content_filter,
        orientation=settings.unsplash_orientation,
        color=settings.unsplash_color,
        details=settings.unsplash_details,
        list_seek_back_pages=settings.list_seek_back_pages,
        image=ImageParams(width=settings.unsplash_image_width, quality=settings.unsplash_image_quality),
        stop_on_rate_limit=settings.stop_on_rate_limit,
    )


# The layout a NEW dataset gets when LAYOUT is unset: shards (every operating command works on
# them, on both stores); LAYOUT=files opts a new dataset out. An existing dataset keeps its own.
NEW_DATASET_LAYOUT = "shards"


def make_store(settings: Settings, stop: threading.Event | None = None, *, create: bool = True) -> Store:
    """The store STORE names. ``stop``: the run's stop event, which ends a hub store's long waits for
    its commit quota (the local store never waits). ``create=False`` (operations on a dataset, such as
    ``compact``): a local folder without a store is an error, not a new empty store."""
    spec = settings.resolved_store()
    kind, _, arg = spec.partition(":")
    if kind == "local":
        from .stores.local import LocalStore

        if not arg:
            raise ConfigError("STORE: local store needs a folder, e.g. local:./my-dataset")
        return LocalStore(Path(arg).expanduser(), index_path=settings.hf_index_repo_path,
                          dataset_layout=settings.layout, new_layout=NEW_DATASET_LAYOUT, create=create)
    if kind in ("hf", "hub"):
        from .stores.hub import HubStore

        if not arg or "/" not in arg:
            raise ConfigError(f"STORE: hub store needs a repo id like hf:user/name, got {spec!r}")
        return HubStore(hub_options(settings, arg), stop=stop)
    raise ConfigError(f"STORE: unknown store {spec!r}; use local:DIR or hf:USER/REPO")


def hub_options(settings: Settings, repo_id: str) -> HubOptions:
    """The CLI's hub store options (token and endpoint as the client library reads them)."""
    from .stores.hub import HubOptions

    return HubOptions(
        repo_id,
        repo_type=settings.hf_repo_type,
        private=not settings.hf_public,
        token=settings.secret("hf_token") or None,
        endpoint=settings.hf_endpoint or None,
        index_path=settings.hf_index_repo_path,
        commits_per_hour=settings.hf_commits_per_hour,
        auto_compact_shards=settings.hf_compact_every_shards if settings.hf_write_index else 0,
        client_id=settings.client_id,
        journal_dir=Path(settings.runs_dir) / ".state",
        layout=settings.layout,
        new_layout=NEW_DATASET_LAYOUT,
    )


def make_predictor(settings: Settings, work_dir: Path) -> Predictor:
    choice = settings.resolved_predictor()
    if choice == "planar":
        from .predict.planar import PlanarPredictor

        return PlanarPredictor(resolution=settings.planar_resolution, batch_size=settings.sharp_batch_size)
    if choice in ("sharp", "sharp-cli", "auto"):
        return _make_sharp(settings, choice, work_dir)
    raise ConfigError(f"PREDICTOR: unknown predictor {choice!r}; use auto, sharp, sharp-cli or planar")


def _make_sharp(settings: Settings, choice: str, work_dir: Path) -> Predictor:
    try:
        from .predict import sharp as sharp_backend
        from .predict import sharp_cli
    except ImportError as exc:  # the backends ship with the package; a missing one is a packaging bug
        raise ConfigError(f"PREDICTOR: SHARP backends unavailable: {exc}") from None
    if choice in ("sharp", "auto") and sharp_backend.sharp_available():
        return sharp_backend.SharpPredictor(sharp_options(settings))
    cli_ok = sharp_cli.sharp_cli_available(conda_env=_conda_env(settings))
    if choice in ("sharp-cli", "auto") and cli_ok:
        return sharp_cli.SharpCliPredictor(
            conda_env=_conda_env(settings), ml_sharp_dir=settings.ml_sharp_dir or None,
            device=settings.sharp_device, verbose=settings.sharp_verbose,
            input_dir=settings.sharp_input_dir or None, work_dir=work_dir / "sharp-cli",
            timeout_s=settings.sharp_timeout_secs, batch_size=settings.sharp_batch_size,
            checkpoint_path=settings.sharp_checkpoint_path or None,
        )
    raise ConfigError(sharp_backend.describe_install_help())


def sharp_options(settings: Settings) -> SharpOptions:
    """The in-process SHARP predictor's options, read from the settings once."""
    from .predict.sharp import SharpOptions

    return SharpOptions(
        checkpoint_path=settings.sharp_checkpoint_path or None,
        device=settings.sharp_device,
        batch_size=settings.sharp_batch_size,
        precision=settings.sharp_precision,
        random_weights=settings.sharp_random_weights,
    )


def _conda_env(settings: Settings) -> str | None:
    """Use conda only when it exists and the user did not put ``sharp`` on PATH directly."""
    if shutil.which("sharp") is None and shutil.which("conda") is not None and settings.conda_env_name:
        return settings.conda_env_name
    return None
