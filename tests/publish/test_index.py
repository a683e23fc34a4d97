"""Index rows ↔ JSONL: stable key order, every key, no nulls, stable types."""

from __future__ import annotations

import json

import pytest

from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.publish.index import decode_rows, encode_rows, index_features
from sharp_dataset_pipeline.records import IndexRow


def _row(i: int, **kw: object) -> IndexRow:
    return IndexRow(id=f"id{i}", source="unsplash", unit="list/oldest/000000-000299", **kw)


def test_roundtrip_keeps_every_field() -> None:
    rows = [_row(1, width=640, height=480, focal_px=512.5, user_name="Zoë «quotes» \"x\"", tags="a, b"),
            _row(2, extra_files='[{"path": "x.spz"}]', description="line1\nline2")]
    data = encode_rows(rows)
    assert data.endswith(b"\n") and data.count(b"\n") == 2
    assert decode_rows(data) == rows


def test_every_line_has_all_keys_in_field_order_and_no_nulls() -> None:
    data = encode_rows([_row(1), _row(2, width=3)])
    for line in data.decode().splitlines():
        obj = json.loads(line)
        assert list(obj) == IndexRow.field_names()
        assert None not in obj.values()


def test_types_are_stable_even_when_given_loosely() -> None:
    # A float focal length that happens to be whole, an int given as float, None for a string.
    row = _row(1, focal_px=1000, width=640.0, user_name=None)  # type: ignore[arg-type]
    obj = json.loads(encode_rows([row]))
    assert isinstance(obj["focal_px"], float) and obj["focal_px"] == 1000.0
    assert isinstance(obj["width"], int) and obj["width"] == 640
    assert obj["user_name"] == ""
    assert '"focal_px":1000.0' in encode_rows([row]).decode()


@pytest.mark.parametrize(
    "kw",
    [{"width": 1.5}, {"focal_px": float("nan")}, {"focal_px": float("inf")}, {"width": True},
     {"width": "abc"}, {"height": [1]}],
)
def test_bad_values_are_refused(kw: dict) -> None:
    with pytest.raises(StoreError):
        encode_rows([_row(1, **kw)])


def test_features_match_field_types() -> None:
    feats = index_features()
    assert list(feats) == IndexRow.field_names()
    assert feats["id"] == "string" and feats["image_size"] == "int64" and feats["focal_px"] == "float64"
    assert set(feats.values()) == {"string", "int64", "float64"}


@pytest.mark.parametrize(
    ("data", "line"),
    [(b'{"id": "a", "source": "s", "unit": "u"}\nnot json\n', 2),
     (b'[1, 2]\n', 1),
     (b'{"id": "a", "source": "s"}\n', 1),
     (b'{"id": "a", "source": "s", "unit": "u", "width": "wide"}\n', 1)],
)
def test_malformed_lines_name_their_number(data: bytes, line: int) -> None:
    with pytest.raises(StoreError, match=f"line {line}"):
        decode_rows(data)


def test_decode_ignores_unknown_keys_and_blank_lines() -> None:
    data = b'{"id": "a", "source": "s", "unit": "u", "future_col": 1}\n\n'
    assert decode_rows(data) == [IndexRow(id="a", source="s", unit="u")]


def test_a_predecessor_line_reads_as_its_files_layout_row_and_drops_by_image_id() -> None:
    from sharp_dataset_pipeline.publish.index_edit import drop_lines

    ours = b'{"id": "a", "source": "s", "unit": "u"}\n'
    theirs = b'{"image": "https://huggingface.co/datasets/o/n/resolve/main/unsplash/b1/b1.jpg", "image_id": "b1"}\n'
    rows = decode_rows(ours + theirs)
    assert [(r.id, r.source, r.unit, r.image_path, r.ply_path) for r in rows] == [
        ("a", "s", "u", "", ""), ("b1", "unsplash", "predecessor", "unsplash/b1/b1.jpg", "unsplash/b1/b1.ply")]
    assert drop_lines(ours + theirs, {"b1"}) == ours and drop_lines(ours + theirs, {"a"}) == theirs
    with pytest.raises(StoreError, match="line 1"):
        decode_rows(b'{"image_id": "../x"}\n')
