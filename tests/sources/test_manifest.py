"""ManifestSource: CSV / TSV / JSONL rows as items, local or over HTTP (with faults), seekable units."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from emulators.files import FileServer
from sharp_dataset_pipeline.errors import ConfigError, PermanentError
from sharp_dataset_pipeline.net import make_client
from sharp_dataset_pipeline.records import Item
from sharp_dataset_pipeline.sources.manifest import ManifestSource, detect_format, row_to_item

LITE_COLUMNS = ["photo_id", "photo_url", "photo_image_url", "photo_submitted_at", "photo_description",
                "photographer_username", "photographer_first_name", "photographer_last_name",
                "exif_focal_length", "ai_description", "blur_hash"]


def _all(src: ManifestSource) -> list[Item]:
    return [item for unit in src.units() for item in src.items(unit)]


def _csv_text(rows: list[dict], delimiter: str = ",") -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _generic_rows() -> list[dict]:
    return [
        {"id": "p1", "url": "https://img.test/1.jpg", "license": "CC0-1.0", "user_name": "Ann",
         "page_url": "https://example.org/1", "description": "a\nmulti-line, quoted \"text\""},
        {"id": "p2", "url": "", "license": "", "user_name": "", "page_url": "", "description": ""},
        {"id": "../../etc", "url": "https://img.test/3.jpg", "license": "", "user_name": "", "page_url": "",
         "description": ""},
        {"id": "", "url": "https://img.test/4.jpg", "license": "", "user_name": "", "page_url": "",
         "description": ""},
        {"id": "p5", "url": "ftp://img.test/5.jpg", "license": "", "user_name": "", "page_url": "",
         "description": ""},
        {"id": "p6", "url": "https://img.test/6.jpg", "license": "CC-BY-4.0", "user_name": "Bo",
         "page_url": "", "description": "six"},
    ]


def _lite_rows() -> list[dict]:
    rows = []
    for n in range(5):
        rows.append({
            "photo_id": f"Xy{n}_a-B", "photo_url": f"https://unsplash.com/photos/Xy{n}_a-B",
            "photo_image_url": f"https://images.unsplash.com/photo-{n}", "photo_submitted_at": "2020-01-01",
            "photo_description": f"desc {n}" if n else "", "photographer_username": f"user{n}",
            "photographer_first_name": "Jo", "photographer_last_name": "Doe" if n % 2 else "",
            "exif_focal_length": "4.25" if n == 0 else ("50.0" if n == 1 else ""),
            "ai_description": f"ai {n}", "blur_hash": "LEHV6nWB2y",
        })
    return rows


def test_csv_rows_become_items_with_stable_offsets_and_skips(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(_csv_text(_generic_rows()), encoding="utf-8")
    src = ManifestSource(str(path), range_size=4)
    items = _all(src)
    assert src.format == "csv"
    assert [i.offset for i in items] == [0, 2, 3, 5]  # rows 1 and 4 have no http(s) URL
    assert src.skipped_counts() == {"no_url": 2}
    first = items[0]
    assert (first.id, first.url, first.source) == ("p1", "https://img.test/1.jpg", "manifest")
    assert first.meta == {"license": "CC0-1.0", "user_name": "Ann", "page_url": "https://example.org/1",
                          "description": "a\nmulti-line, quoted \"text\""}
    assert items[1].id == hashlib.sha256(b"../../etc").hexdigest()[:16]  # unsafe id replaced
    assert items[2].id == hashlib.sha256(b"https://img.test/4.jpg").hexdigest()[:16]  # no id: URL hash
    assert items[3].unit.endswith("/000004-000005")  # the last unit ends at the last row


def test_unit_keys_hash_the_location_and_units_seek_correctly(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(_csv_text(_generic_rows()), encoding="utf-8")
    src = ManifestSource(str(path), range_size=2)
    units = list(src.units())
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    assert [u.key for u in units] == [f"manifest/{digest}/000000-000001", f"manifest/{digest}/000002-000003",
                                      f"manifest/{digest}/000004-000005"]
    whole = [(i.offset, i.id) for i in _all(ManifestSource(str(path), range_size=100))]
    fresh = ManifestSource(str(path), range_size=2)
    per_unit = [(i.offset, i.id) for u in reversed(list(fresh.units())) for i in fresh.items(u)]
    assert sorted(per_unit) == whole  # any unit, read in any order, gives the same rows


def test_unsplash_lite_tsv_maps_attribution_and_focal(tmp_path: Path) -> None:
    path = tmp_path / "photos.tsv000"
    path.write_text(_csv_text(_lite_rows(), delimiter="\t"), encoding="utf-8")
    src = ManifestSource(str(path), range_size=3)
    items = _all(src)
    assert src.format == "tsv" and len(items) == 5
    a, b, c = items[0], items[1], items[2]
    assert a.id == "Xy0_a-B" and a.url == "https://images.unsplash.com/photo-0"
    assert a.meta["page_url"] == a.meta["unsplash_url"] == "https://unsplash.com/photos/Xy0_a-B"
    assert a.meta["user_username"] == "user0" and a.meta["user_url"] == "https://unsplash.com/@user0"
    assert a.meta["user_name"] == "Jo" and b.meta["user_name"] == "Jo Doe"
    assert "description" not in a.meta and b.meta["description"] == "desc 1"
    assert a.meta["alt_description"] == "ai 0" and a.meta["created_at"] == "2020-01-01"
    assert a.meta["blur_hash"] == "LEHV6nWB2y"
    assert a.focal_hint_mm35 == pytest.approx(4.25 * 8.4) and b.focal_hint_mm35 == 50.0
    assert c.focal_hint_mm35 == 0.0


def test_jsonl_with_blank_and_broken_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"id": "j1", "image_url": "https://img.test/j1.jpg", "tags": ["sky", "sea"]}), "",
             "{not json", json.dumps(["a", "list"]),
             json.dumps({"photo_id": "j2", "URL": "https://img.test/j2.png", "focal_mm35": 24})]
    path = tmp_path / "rows.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    src = ManifestSource(str(path), range_size=2)
    items = _all(src)
    assert src.format == "jsonl"
    assert [(i.id, i.offset) for i in items] == [("j1", 0), ("j2", 3)]
    assert items[0].meta == {"tags": "sky,sea"}
    assert items[1].focal_hint_mm35 == 24.0
    assert src.skipped_counts() == {"bad_row": 2}


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [("a.csv", b"", "csv"), ("a.TSV", b"", "tsv"), ("photos.tsv000", b"", "tsv"), ("a.jsonl", b"", "jsonl"),
     ("list.txt", b'\xef\xbb\xbf {"id": 1}', "jsonl"), ("list", b"id\turl\n", "tsv"), ("x", b"id,url\n", "csv")],
)
def test_detect_format(name: str, head: bytes, expected: str) -> None:
    assert detect_format(name, head) == expected


def test_row_to_item_is_pure_and_explains_skips() -> None:
    item, reason = row_to_item({"url": "https://a.test/x.jpg"}, offset=7, unit="u", source="manifest")
    assert reason == "" and item is not None and item.offset == 7 and item.unit == "u"
    assert row_to_item({"url": "not a url"}, offset=0, unit="u", source="manifest") == (None, "no_url")


def _serve_all_formats(server: FileServer) -> dict[str, str]:
    rows = _generic_rows()
    jsonl = "".join(json.dumps(r) + "\n" for r in rows)
    return {
        "csv": server.put("/m/list.csv", _csv_text(rows).encode()),
        "tsv": server.put("/m/list.tsv?download=1", _csv_text(rows, "\t").encode()),
        "jsonl": server.put("/m/list.jsonl", jsonl.encode()),
    }


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_http_manifest_survives_a_503(file_server: FileServer, tmp_path: Path, fmt: str) -> None:
    url = _serve_all_formats(file_server)[fmt]
    file_server.faults.status(503)
    local = tmp_path / f"list.{fmt}"
    local.write_bytes(file_server.files[f"/m/list.{fmt}"][0])
    with make_client(timeout_s=5) as client:
        src = ManifestSource(url, range_size=4, client=client, retry_base_s=0.0)
        remote = [(i.id, i.url, i.offset) for i in _all(src)]
    assert src.format == fmt
    assert remote == [(i.id, i.url, i.offset) for i in _all(ManifestSource(str(local), range_size=4))]
    assert file_server.faults.pending() == 0 and len(file_server.requests) == 2


def test_http_manifest_is_cached_next_to_the_run(file_server: FileServer, tmp_path: Path) -> None:
    url = _serve_all_formats(file_server)["tsv"]
    file_server.faults.status(500)
    cache = tmp_path / "run"
    first = _all(ManifestSource(url, range_size=4, cache_dir=cache, retry_base_s=0.0))  # makes its own client
    assert [p.name for p in cache.iterdir()] == [f"manifest-{hashlib.sha256(url.encode()).hexdigest()[:12]}.tsv"]
    hits = len(file_server.requests)
    second = _all(ManifestSource(url, range_size=4, cache_dir=cache))
    assert len(file_server.requests) == hits  # read from the cache, same rows
    assert [i.id for i in first] == [i.id for i in second] and len(first) == 4


def test_http_manifest_404_is_permanent(file_server: FileServer) -> None:
    with pytest.raises(PermanentError) as info:
        list(ManifestSource(file_server.url("/missing.csv")).units())
    assert info.value.reason == "http_404"


def test_missing_local_manifest_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        list(ManifestSource(str(tmp_path / "none.csv")).units())


def test_a_jsonl_tag_list_keeps_each_tag_whole_in_the_typed_index(tmp_path: Path) -> None:
    """Tags given as a JSON list: one tag with a comma inside stays one tag (its comma becomes a space) in the
    row's comma-joined form, and so in the Parquet index's list of strings."""
    from sharp_dataset_pipeline.publish.parquet_index import IndexEntry, entry_record
    from sharp_dataset_pipeline.records import IndexRow

    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"id": "t1", "url": "https://img.test/t1.jpg",
                                "tags": ["Paris, France", "  night  ", ""]}) + "\n", encoding="utf-8")
    item = _all(ManifestSource(str(path)))[0]
    assert item.meta["tags"] == "Paris France,night"
    record = entry_record(IndexEntry(IndexRow(id="t1", source="manifest", unit="u", tags=item.meta["tags"])))
    assert record["tags"] == ["Paris France", "night"]


def test_an_unreadable_manifest_is_named_by_its_path(tmp_path: Path) -> None:
    """A field over the csv module's limit stops the scan with one error that names the file the user gave
    (not an internal hash), and where in it."""
    path = tmp_path / "big.csv"
    path.write_text("id,url,description\nb1,https://img.test/b1.jpg," + "x" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"manifest {re.escape(str(path))}: unreadable near byte \d+"):
        list(ManifestSource(str(path)).units())


@pytest.mark.parametrize("range_size", [1, 300])
def test_an_unclosed_quote_does_not_swallow_the_rows_after_it(
    tmp_path: Path, range_size: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "photos.tsv"
    path.write_text(
        "id\turl\tdescription\n"
        "a\thttps://img.test/a.jpg\t\"5 tall vase\n"           # opens a quote and never closes it
        "b\thttps://img.test/b.jpg\tplain\n"
        "c\thttps://img.test/c.jpg\t\"quoted\" and more\n"    # the quote that would have closed a's
        "d\thttps://img.test/d.jpg\t\"a\nproper multi-line\tfield\"\n"
        "e\thttps://img.test/e.jpg\tlast\n",
        encoding="utf-8",
    )
    with caplog.at_level("WARNING"):
        items = _all(ManifestSource(str(path), range_size=range_size))
    assert [(i.id, i.offset, i.url) for i in items] == [
        (n, k, f"https://img.test/{n}.jpg") for k, n in enumerate("abcde")
    ]
    described = {i.id: i.meta.get("description") for i in items}
    assert described["a"] == '"5 tall vase'
    assert described["b"] == "plain"
    assert described["d"] == "a\nproper multi-line\tfield"  # a real quoted field keeps its lines
    assert sum("never closes" in r.getMessage() for r in caplog.records) == 1


def test_a_quoted_multi_line_csv_field_with_commas_stays_one_row(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text('id,url,description\np1,https://img.test/1.jpg,"first line\nsecond, with, commas"\n'
                    "p2,https://img.test/2.jpg,two\n", encoding="utf-8")
    items = _all(ManifestSource(str(path)))
    assert [(i.id, i.meta.get("description")) for i in items] == [
        ("p1", "first line\nsecond, with, commas"), ("p2", "two")]


def test_a_manifest_without_a_url_column_says_which_columns_it_needs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "m.csv"
    path.write_text("foo,bar\nx,https://img.test/1.jpg\n", encoding="utf-8")
    src = ManifestSource(str(path))
    with caplog.at_level("WARNING"):
        assert _all(src) == []
    assert src.skipped_counts() == {"no_url": 1}
    warned = [r.getMessage() for r in caplog.records if "URL column" in r.getMessage()]
    assert len(warned) == 1 and "url, image_url, photo_image_url" in warned[0] and "foo, bar" in warned[0]
