"""Records that cross module boundaries. Pure: no I/O here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .redact import redact, strip_url

# Row fields that hold URLs: stored and published, so credentials are stripped from them on construction.
_URL_FIELDS = ("source_url", "page_url", "unsplash_url", "user_url", "gsplat_url")


@dataclass(frozen=True)
class Unit:
    """A contiguous slice ``[start, stop)`` of one source's deterministic enumeration."""

    key: str
    start: int
    stop: int


@dataclass(frozen=True)
class Item:
    """One photo to turn into a splat.

    ``meta`` holds attribution and descriptive fields whose keys are IndexRow field names
    (``user_name``, ``page_url``, ``license``, ``tags``, ...); values are str, int or float.
    """

    id: str
    source: str
    unit: str
    offset: int
    url: str = ""
    path: str = ""
    ext_hint: str = ""
    focal_hint_mm35: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        """Where the item came from, as the user knows it: the folder-relative path, else the URL or
        path. Unredacted: pass a URL through ``redact.strip_url`` before storing it."""
        return str(self.meta.get("source_path") or self.url or self.path)


@dataclass
class FetchedImage:
    """An item's original bytes on disk (never re-encoded) plus the decoded RGB for the predictor."""

    item: Item
    original_path: Path
    ext: str
    rgb: np.ndarray
    width: int
    height: int
    focal_px: float
    focal_source: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Failure:
    """One item that did not make it, as data. ``reason`` is a short stable code, ``detail`` readable.

    ``detail`` goes to the ledger, logs, metrics and (hub) ``.coord/batches``: it is redacted on construction,
    so a URL or header quoted by an error can never carry a credential there.
    ``source`` names the input it came from (a folder-relative path or a URL without credentials),
    so a failure can be traced back without the run's temp files.
    """

    item_id: str
    unit: str
    stage: str
    reason: str
    detail: str
    transient: bool
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", redact(self.detail))
        object.__setattr__(self, "source", strip_url(self.source))


@dataclass(frozen=True)
class SkippedInput:
    """An input a source skipped because it repeats another one (``duplicate_content``,
    ``duplicate_id``, ``duplicate_row``, ``duplicate_url``): which input, and which earlier one it repeats.

    ``source`` and ``duplicate_of`` name the inputs as the user knows them (a folder-relative path,
    a URL without credentials); ``detail`` says more (the manifest's row numbers)."""

    item_id: str
    unit: str
    reason: str
    source: str
    duplicate_of: str
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", strip_url(self.source))
        object.__setattr__(self, "duplicate_of", strip_url(self.duplicate_of))
        object.__setattr__(self, "detail", redact(self.detail))


@dataclass(frozen=True)
class PublishedFile:
    """A file that a publish step places at ``repo_path`` (relative, '/'-separated)."""

    kind: str
    repo_path: str
    local_path: Path
    size: int
    sha256: str


@dataclass
class IndexRow:
    """One published item. Stable types: strings for text (never None), ints for sizes."""

    id: str
    source: str
    unit: str
    image_path: str = ""
    image_size: int = 0
    image_sha256: str = ""
    ply_path: str = ""
    ply_size: int = 0
    ply_sha256: str = ""
    extra_files: str = "[]"
    width: int = 0
    height: int = 0
    focal_px: float = 0.0
    focal_source: str = ""
    num_gaussians: int = 0
    predictor: str = ""
    model_version: str = ""
    source_url: str = ""
    source_path: str = ""
    page_url: str = ""
    unsplash_url: str = ""
    user_name: str = ""
    user_username: str = ""
    user_url: str = ""
    license: str = ""
    description: str = ""
    alt_description: str = ""
    tags: str = ""
    topics: str = ""
    color: str = ""
    blur_hash: str = ""
    created_at: str = ""
    processed_at: str = ""
    client_id: str = ""
    gsplat_url: str = ""
    gsplat_share_id: str = ""
    gsplat_model_id: str = ""
    # LAYOUT=shards only (empty in the files layout): the item's WebDataset key, the shards holding its
    # bytes, and its tar members as JSON (``[{"shard", "name", "field", "offset", "size", "sha256"}]``,
    # sorted by field). Its ``image_path``/``ply_path`` are then empty and ``extra_files`` is ``[]``.
    shard_key: str = ""
    shard_path: str = ""
    ply_shard_path: str = ""
    members: str = ""

    def __post_init__(self) -> None:
        # The item's URL may carry a signature or key that the download needed; the dataset must not.
        for name in _URL_FIELDS:
            value = getattr(self, name)
            if value:
                setattr(self, name, strip_url(value))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexRow:
        names = set(cls.field_names())
        return cls(**{k: v for k, v in data.items() if k in names})


def row_source(row: IndexRow) -> str:
    """The input an index row came from, as a ``Failure.source`` (its URL is stored redacted)."""
    return row.source_path or row.source_url


@dataclass
class ProcessedItem:
    """An item ready to publish: its index row and the files that go with it."""

    row: IndexRow
    files: list[PublishedFile]
    followup_payload: str = ""
    # GSPLAT_UPLOAD=1: the file the share stage uploads after publish (kept until it has).
    share_file: Path | None = None
    # SHARP's camera for the item (intrinsics, extrinsics, image size, disparity, colour space,
    # version): what the splat formats cannot carry; the sharded layout publishes it in ``<key>.json``.
    camera: dict[str, Any] | None = None
    # Run-folder files made on the way but never published (the SHARP PLY when PLY is not a publish
    # format): dropped with the published ones when the run does not keep its files.
    scratch: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Lease:
    """A time-limited claim on a unit by one client."""

    unit: str
    owner: str
    nonce: str
    acquired_at: float
    expires_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class Followup:
    """An action owed after an item is published (e.g. Unsplash download tracking).

    Recorded in the same atomic step as the publish, completed later, so a resume neither
    repeats nor skips it.
    """

    kind: str
    item_id: str
    payload: str
    # Filled in by the stores when read back: who recorded it and when (wall-clock seconds), so a
    # client completes its own at once and adopts another's only once that client is presumed gone.
    client: str = field(default="", compare=False)
    recorded_at: float = field(default=0.0, compare=False)


@dataclass
class Batch:
    """Everything one atomic publish step carries."""

    client_id: str
    items: list[ProcessedItem] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    units_done: list[str] = field(default_factory=list)
    renew_units: list[str] = field(default_factory=list)
    lease_ttl_s: float = 0.0
    followups: list[Followup] = field(default_factory=list)
    followups_done: list[Followup] = field(default_factory=list)
    # ``run --redo``: "model-changed" replaces published items made by another predictor or model
    # version, "all" replaces any published item; otherwise published ids are skipped.
    redo: str = ""

    def empty(self) -> bool:
        return not (
            self.items or self.failures or self.units_done or self.renew_units
            or self.followups or self.followups_done
        )


@dataclass(frozen=True)
class ItemState:
    """What the ledger knows about an item id."""

    published: bool = False
    excluded: bool = False
    failed_permanently: bool = False
    transient_failures: int = 0
    # Which predictor and model made the published item: it counts as done only for that model.
    predictor: str = ""
    model_version: str = ""
