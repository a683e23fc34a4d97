"""Index rows ↔ JSONL bytes. Pure.

Every line carries every ``IndexRow`` field, in the dataclass's order, with the field's own
type (str / int / float) and never a null, so that shards written by different clients at
different times concatenate into one table with stable column types.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..errors import StoreError
from ..records import IndexRow
from .predecessor_index import is_predecessor_row, predecessor_row

_DTYPES = {str: "string", int: "int64", float: "float64"}


@cache
def _field_types() -> tuple[tuple[str, type], ...]:
    hints = typing.get_type_hints(IndexRow)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(IndexRow))


def index_features() -> dict[str, str]:
    """Column name → dataset dtype (``string`` / ``int64`` / ``float64``), in row order."""
    return {name: _DTYPES[kind] for name, kind in _field_types()}


def _coerce(name: str, kind: type, value: Any) -> Any:
    if value is None:
        return kind()
    if kind is str:
        return value if isinstance(value, str) else str(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise StoreError(f"index field {name!r} needs a number, got {value!r}")
    try:
        number = float(value) if kind is float or isinstance(value, float) else int(value)
    except ValueError as exc:
        raise StoreError(f"index field {name!r} needs a number, got {value!r}") from exc
    if not math.isfinite(number):
        # JSON has no NaN/inf; a reader would choke on the whole shard.
        raise StoreError(f"index field {name!r} is not finite: {value!r}")
    if kind is int:
        if number != int(number):
            raise StoreError(f"index field {name!r} needs an integer, got {value!r}")
        return int(number)
    return float(number)


def row_to_json(row: IndexRow) -> str:
    """One row as one JSON line (without the newline)."""
    data = {name: _coerce(name, kind, getattr(row, name)) for name, kind in _field_types()}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_rows(rows: list[IndexRow]) -> bytes:
    """Rows as UTF-8 JSONL, one line per row, each line ending in a newline."""
    return "".join(row_to_json(row) + "\n" for row in rows).encode("utf-8")


def row_from_json(line: str) -> IndexRow:
    """Parse one JSON line written by ``row_to_json`` (unknown keys are ignored). A line of the
    predecessor's index (``image_id`` and none of our keys: its ``data/train.jsonl`` sits at our
    default index path) reads as the files-layout row it describes (``publish.predecessor_index``),
    so a predecessor dataset opens, verifies and migrates as a ``files`` dataset."""
    return _row_of(json.loads(line))


def _row_of(data: Any) -> IndexRow:
    if isinstance(data, dict) and is_predecessor_row(data):
        return predecessor_row(data)
    if not isinstance(data, dict):
        raise StoreError("index line is not a JSON object")
    types = dict(_field_types())
    missing = [name for name in ("id", "source", "unit") if name not in data]
    if missing:
        raise StoreError(f"index line lacks {', '.join(missing)}")
    clean = {k: _coerce(k, types[k], v) for k, v in data.items() if k in types}
    return IndexRow(**clean)


def decode_rows(data: bytes) -> list[IndexRow]:
    """Parse JSONL bytes (predecessor lines too: ``row_from_json``); a malformed line raises
    ``StoreError`` naming its line number."""
    rows: list[IndexRow] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(row_from_json(line))
        except (ValueError, StoreError) as exc:
            raise StoreError(f"malformed index line {number}: {exc}") from exc
    return rows


def row_files(row: IndexRow) -> list[str]:
    """Repo paths an index row points at."""
    paths = [p for p in (row.image_path, row.ply_path) if p]
    try:
        extra = json.loads(row.extra_files or "[]")
    except ValueError:
        extra = []
    for entry in extra if isinstance(extra, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            paths.append(entry["path"])
        elif isinstance(entry, str):
            paths.append(entry)
    return paths


@dataclass(frozen=True)
class FileRef:
    """A file an index row points at, with the size and hash the row records (-1 / "" when unknown)."""

    item_id: str
    path: str
    size: int
    sha256: str


def row_file_refs(row: IndexRow) -> list[FileRef]:
    """The files a row points at: the photo, the PLY and every entry of ``extra_files``."""
    refs = [FileRef(row.id, p, s, h) for p, s, h in ((row.image_path, row.image_size, row.image_sha256),
                                                     (row.ply_path, row.ply_size, row.ply_sha256)) if p]
    try:
        extra = json.loads(row.extra_files or "[]")
    except ValueError:
        extra = []
    for entry in extra if isinstance(extra, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            size = entry.get("size")
            refs.append(FileRef(row.id, entry["path"], size if isinstance(size, int) else -1,
                                str(entry.get("sha256") or "")))
    return refs
