"""Row fields that change after publish (a late gsplat.org share's ``gsplat_url``, ``gsplat_share_id``,
``gsplat_model_id``), carried into the Parquet index. Pure: Parquet bytes in, Parquet bytes out.

The JSONL rows are the ledger and get such fields first (``index_edit.update_lines``). The Parquet index
is what ``load_dataset(repo)`` and the Hub's viewer show, so the store rewrites the Parquet files holding
those rows in the same step: ``stale_fields`` says which rows of one file differ from the ledger's (reading
a few columns only, never the previews), ``rewrite_fields`` writes the file again with the new values
(every other column, previews and members included, as it was).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreError
from ..records import IndexRow
from .parquet_index import read_index, write_index

# The IndexRow fields a store updates on published rows (``update_share_fields``).
LATE_FIELDS = ("gsplat_url", "gsplat_share_id", "gsplat_model_id")


def read_fields(src: BinaryIO, names: Sequence[str] = LATE_FIELDS,
                seen: Counter[str] | None = None) -> dict[str, dict[str, str]]:
    """id → {field: value} of one index file, for ``names`` only (null read as ``""``, as in the rows);
    ``seen`` counts every id read, so a caller can tell an id the files hold twice."""
    try:
        table = pq.ParquetFile(src, pre_buffer=False).read(columns=["id", *names], use_threads=False)
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise StoreError(f"index file is not readable Parquet with columns {['id', *names]}: {exc}") from exc
    out: dict[str, dict[str, str]] = {}
    for rec in table.to_pylist():
        out[str(rec["id"])] = {n: "" if rec[n] is None else str(rec[n]) for n in names}
        if seen is not None:
            seen[str(rec["id"])] += 1
    return out


def stale_fields(have: Mapping[str, Mapping[str, str]], rows: Mapping[str, IndexRow],
                 names: Sequence[str] = LATE_FIELDS) -> dict[str, dict[str, str]]:
    """The rows of a file (``have``, from ``read_fields``) whose ``names`` differ from ``rows`` (the
    ledger's): id → the ledger's values. Ids the ledger does not hold are left alone."""
    out: dict[str, dict[str, str]] = {}
    for item_id, fields in have.items():
        row = rows.get(item_id)
        if row is None:
            continue
        want = {n: str(getattr(row, n)) for n in names}
        if any(fields.get(n, "") != want[n] for n in names):
            out[item_id] = want
    return out


def rewrite_fields(src: BinaryIO, updates: Mapping[str, Mapping[str, str]], out: BinaryIO) -> list[str]:
    """Write the index file ``src`` to ``out`` with ``updates[id]`` (IndexRow field → value) merged into
    its rows; returns the ids changed. Unknown fields raise ``StoreError``."""
    known = {f.name for f in dataclasses.fields(IndexRow)}
    for fields in updates.values():
        bad = set(fields) - known
        if bad:
            raise StoreError(f"not index row fields: {sorted(bad)}")
    changed: list[str] = []
    entries = []
    for entry in read_index(src):
        new = updates.get(entry.row.id)
        if new:
            row = dataclasses.replace(entry.row, **dict(new))  # type: ignore[arg-type]  # str fields (checked above)
            entry = dataclasses.replace(entry, row=row)
            changed.append(entry.row.id)
        entries.append(entry)
    write_index(entries, out)
    return changed
