"""Which layout a dataset has: one per dataset, recorded in the store, never mixed. Pure.

A store records its layout in ``.coord/layout.json`` (``{"layout": "shards"}``) when a dataset is
new. A dataset without the marker that already holds index rows (or the predecessor's
``unsplash/<id>/`` folders) predates it and is ``files``; an empty one gets what ``LAYOUT`` asks,
``shards`` by default. An explicit ``LAYOUT`` that disagrees with the dataset is a ``ConfigError``.
"""

from __future__ import annotations

import json

from ..errors import ConfigError
from .layout import COORD_DIR

SHARDS, FILES = "shards", "files"
LAYOUTS = (SHARDS, FILES)
MARKER_PATH = f"{COORD_DIR}/layout.json"
PREDECESSOR_DIR = "unsplash"  # the predecessor project's per-item folders: unsplash/<id>/<id>.ply


def check_layout(requested: str) -> str:
    """``requested`` ("" = detect) if it names a layout; ``ConfigError`` otherwise."""
    if requested not in ("", *LAYOUTS):
        raise ConfigError(f"LAYOUT: unknown layout {requested!r}; use shards, files or leave it empty")
    return requested


def decide_layout(requested: str, recorded: str | None, has_rows: bool,
                  new_default: str = SHARDS) -> tuple[str, bool]:
    """``(layout, write the marker)`` for a dataset whose marker says ``recorded`` (None: no marker)
    and that ``has_rows`` (index rows or the predecessor's item folders); a new dataset gets
    ``requested``, else ``new_default``."""
    check_layout(requested)
    check_layout(new_default)
    if recorded is not None:
        if recorded not in LAYOUTS:
            raise ConfigError(f"{MARKER_PATH} names an unknown layout {recorded!r}")
        detected, write = recorded, False
    elif has_rows:
        detected, write = FILES, False
    else:
        detected, write = requested or new_default, True
    if requested and requested != detected:
        fix = "use `sharp-dataset migrate --to shards`" if detected == FILES else "leave LAYOUT empty"
        raise ConfigError(f"LAYOUT={requested}, but this dataset is in the {detected} layout: {fix}")
    return detected, write


def marker_bytes(layout_name: str) -> bytes:
    check_layout(layout_name)
    return (json.dumps({"layout": layout_name}, sort_keys=True) + "\n").encode()


def read_marker(data: bytes) -> str:
    """The layout a marker file names; ``ConfigError`` for anything else."""
    try:
        value = json.loads(data.decode("utf-8")).get("layout")
    except (ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{MARKER_PATH} is not a layout marker: {exc}") from exc
    if value not in LAYOUTS:
        raise ConfigError(f"{MARKER_PATH} names an unknown layout {value!r}")
    return str(value)
