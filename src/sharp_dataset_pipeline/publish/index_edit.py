"""Line-level edits of JSONL index files (pure): every line not edited is kept byte for byte.

Used by maintenance steps only (removal, recording a late share), never on the publish path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def _edit(data: bytes, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> bytes:
    out = []
    for line in data.decode("utf-8").splitlines(keepends=True):
        try:
            obj = json.loads(line) if line.strip() else None
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            out.append(line)
            continue
        new = change(obj)
        if new is None:
            continue
        if new is obj:
            out.append(line)
        else:
            ending = "\n" if line.endswith("\n") else ""
            out.append(json.dumps(new, ensure_ascii=False, separators=(",", ":")) + ending)
    return "".join(out).encode("utf-8")


def _line_id(obj: dict[str, Any]) -> Any:
    """A row's id: ``id``, or a predecessor row's ``image_id`` (``publish.index.decode_rows`` reads both)."""
    return obj["id"] if "id" in obj else obj.get("image_id")


def drop_lines(data: bytes, ids: set[str]) -> bytes:
    """Index file bytes without the rows of ``ids`` (predecessor rows by their ``image_id``)."""
    return _edit(data, lambda obj: None if _line_id(obj) in ids else obj)


def update_lines(data: bytes, updates: dict[str, dict[str, str]]) -> bytes:
    """Index file bytes with ``updates[id]`` merged into the rows of those ids (key order kept)."""
    return _edit(data, lambda obj: {**obj, **updates[obj["id"]]} if obj.get("id") in updates else obj)
