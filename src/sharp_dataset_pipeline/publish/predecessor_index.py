"""The predecessor's index (``data/train.jsonl`` rows keyed by ``image_id``) → this project's rows. Pure.

The predecessor published ``<subdir>/<id>/<id>.jpg``, ``.ply`` and optionally ``.spz`` per photo and
one JSONL row per photo whose shape changed with the tool that wrote it last (compact rows carry
``image``, ``image_id``, ``jpg_/ply_/spz_sha256``, ``jpg_/ply_/spz_bytes``, attribution text; the
non-compact ones add ``*_url``, ``*_path``, ``user_name``...). Our stores read neither the row shape
nor the file names, so ``migrate --to shards`` reads them here: each row becomes an ``IndexRow`` in
this project's files-layout shape (paths, sizes, hashes, attribution) naming the files it had.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import StoreError
from ..records import IndexRow

PREDECESSOR_SOURCE = "unsplash"
# Its photos were never leased in units: every migrated row names this one, so the ledger's
# per-unit counts keep them apart from the units of later runs.
PREDECESSOR_UNIT = "predecessor"
PREDECESSOR_PREDICTOR = "sharp"
_LICENSE = "Unsplash License"
# ``https://huggingface.co/datasets/<owner>/<name>/resolve/<rev>/<path>`` → ``<path>``
_RESOLVE = re.compile(r"/datasets/[^/]+/[^/]+/resolve/[^/]+/(.+)$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def is_predecessor_row(data: dict[str, Any]) -> bool:
    """A predecessor row has an ``image_id`` and none of our required keys."""
    return "image_id" in data and "id" not in data


def holds_predecessor_rows(data: bytes) -> bool:
    """Whether index file bytes hold a line of the predecessor's index."""
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            obj = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(obj, dict) and is_predecessor_row(obj):
            return True
    return False


PREDECESSOR_INDEX_HINT = ("it is the predecessor's index: `sharp-dataset migrate --to shards` carries its rows "
                          "into this project's index (keeping its bytes)")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _repo_path(data: dict[str, Any], url_key: str, path_key: str, default: str) -> str:
    """The repo path of one of the row's files: from its resolve URL, else the default name.
    (``*_path`` fields held the uploader's local paths, so they are not trusted.)"""
    url = _text(data.get(url_key))
    match = _RESOLVE.search(url.split("?", 1)[0])
    if match:
        return match.group(1)
    path = _text(data.get(path_key))
    if path.startswith(default.rsplit("/", 1)[0] + "/"):
        return path
    return default


def predecessor_row(data: dict[str, Any], subdir: str = "unsplash") -> IndexRow:
    """One predecessor JSONL object → a files-layout ``IndexRow`` (photo, PLY and SPZ paths with
    the sizes and hashes the row recorded). Raises ``StoreError`` for a row without a usable id."""
    item_id = _text(data.get("image_id")).strip()
    if not _SAFE_ID.match(item_id):
        raise StoreError(f"predecessor row has no usable image_id: {item_id!r}")
    base = f"{subdir}/{item_id}/{item_id}"
    image = _repo_path(data, "image", "image_path", f"{base}.jpg")
    ply = _repo_path(data, "ply_url", "ply_path", f"{base}.ply")
    extra = []
    if _text(data.get("spz_sha256")) or _int(data.get("spz_bytes")) or data.get("spz_url"):
        extra.append({"kind": "spz", "path": _repo_path(data, "spz_url", "spz_path", f"{base}.spz"),
                      "size": _int(data.get("spz_bytes")), "sha256": _text(data.get("spz_sha256"))})
    page = _text(data.get("unsplash_url")) or f"https://unsplash.com/photos/{item_id}"
    return IndexRow(
        id=item_id, source=PREDECESSOR_SOURCE, unit=PREDECESSOR_UNIT,
        image_path=image, image_size=_int(data.get("jpg_bytes")), image_sha256=_text(data.get("jpg_sha256")),
        ply_path=ply, ply_size=_int(data.get("ply_bytes")), ply_sha256=_text(data.get("ply_sha256")),
        extra_files=json.dumps(extra, sort_keys=True),
        predictor=PREDECESSOR_PREDICTOR,
        source_url=_text(data.get("image_url")), page_url=page, unsplash_url=page,
        user_name=_text(data.get("user_name")), user_username=_text(data.get("user_username")),
        license=_LICENSE,
        description=_text(data.get("description")), alt_description=_text(data.get("alt_description")),
        # Its tags were split into words and space-joined; ours are ", "-joined titles.
        tags=", ".join(_text(data.get("tags")).split()), topics=", ".join(_text(data.get("topics")).split()),
        created_at=_text(data.get("created_at")),
        gsplat_share_id=_text(data.get("gsplat_share_id")),
        gsplat_model_id=_text(data.get("gsplat_model_file_url")),
        gsplat_url=_text(data.get("gsplat_url")),
    )


def parse_predecessor_index(data: bytes, subdir: str = "unsplash") -> list[IndexRow]:
    """A predecessor ``train.jsonl`` → rows, one per id (a repeated id keeps its first row, as the
    predecessor's own dedupe did). Raises ``StoreError`` naming a malformed line."""
    rows: dict[str, IndexRow] = {}
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise StoreError(f"malformed predecessor index line {number}: {exc}") from exc
        if not isinstance(obj, dict) or not is_predecessor_row(obj):
            raise StoreError(f"predecessor index line {number} has no image_id")
        try:
            row = predecessor_row(obj, subdir)
        except StoreError as exc:
            raise StoreError(f"predecessor index line {number}: {exc}") from exc
        rows.setdefault(row.id, row)
    return list(rows.values())
