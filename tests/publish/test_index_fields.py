"""Late row fields (share results) carried into a Parquet index file: only the stale rows are found, from a
few columns; the rewrite changes those fields and keeps every other column (previews, members) as it was."""

from __future__ import annotations

import dataclasses
import io

import pytest
from test_parquet_index import _entry, _webp

from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.publish import parquet_index as pi
from sharp_dataset_pipeline.publish.index_fields import LATE_FIELDS, read_fields, rewrite_fields, stale_fields
from sharp_dataset_pipeline.records import IndexRow


def _file(*entries: pi.IndexEntry) -> bytes:
    buf = io.BytesIO()
    pi.write_index(list(entries), buf)
    return buf.getvalue()


def test_a_share_recorded_on_the_rows_reaches_the_parquet_rows_and_nothing_else_changes() -> None:
    a, b = _entry("a1", preview=_webp((1, 2, 3))), _entry("b2", preview=_webp((9, 8, 7)))
    data = _file(a, b)
    have = read_fields(io.BytesIO(data))
    assert have == {"a1": dict.fromkeys(LATE_FIELDS, ""), "b2": dict.fromkeys(LATE_FIELDS, "")}  # nulls as ''
    shared = dataclasses.replace(b.row, gsplat_url="https://gsplat.org/viewer/X1", gsplat_share_id="X1",
                                 gsplat_model_id="m-7")
    ledger = {"a1": a.row, "b2": shared, "zz": IndexRow(id="zz", source="s", unit="u")}
    updates = stale_fields(have, ledger)
    assert updates == {"b2": {"gsplat_url": "https://gsplat.org/viewer/X1", "gsplat_share_id": "X1",
                              "gsplat_model_id": "m-7"}}  # a1 agrees with the ledger; zz is in no file here
    out = io.BytesIO()
    assert rewrite_fields(io.BytesIO(data), updates, out) == ["b2"]
    before, after = pi.read_index(io.BytesIO(data)), pi.read_index(io.BytesIO(out.getvalue()))
    assert after[0] == before[0]
    assert after[1] == dataclasses.replace(before[1], row=shared)  # preview, members, key: as they were
    assert after[1].preview == b.preview and after[1].members == b.members
    assert stale_fields(read_fields(io.BytesIO(out.getvalue())), ledger) == {}


def test_an_unknown_field_or_a_file_that_is_not_an_index_is_refused() -> None:
    data = _file(_entry("a1"))
    with pytest.raises(StoreError, match="not index row fields"):
        rewrite_fields(io.BytesIO(data), {"a1": {"no_such_field": "x"}}, io.BytesIO())
    with pytest.raises(StoreError, match="not readable Parquet"):
        read_fields(io.BytesIO(b"PAR1 but not really"))
