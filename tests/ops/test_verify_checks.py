"""The pure consistency checks of verify, on hand-made store views."""

from __future__ import annotations

import dataclasses
import json

from sharp_dataset_pipeline.ledger.verify import StoreView, find_problems, lease_problems
from sharp_dataset_pipeline.publish.index import row_to_json
from sharp_dataset_pipeline.records import IndexRow, Lease


def _row(item_id: str, extra: list[dict] | None = None) -> IndexRow:
    return IndexRow(id=item_id, source="folder", unit="u", image_path=f"f/{item_id}/{item_id}.jpg", image_size=10,
                    image_sha256="a" * 64, ply_path=f"f/{item_id}/{item_id}.ply", ply_size=20, ply_sha256="b" * 64,
                    extra_files=json.dumps(extra or []))


def _files(*rows: IndexRow) -> dict[str, int]:
    out = {}
    for r in rows:
        out[r.image_path] = r.image_size
        out[r.ply_path] = r.ply_size
    return out


def _lines(*rows: IndexRow) -> bytes:
    return "".join(row_to_json(r) + "\n" for r in rows).encode()


def test_index_only_view_checks_files_orphans_and_duplicates() -> None:
    a, b = _row("a"), _row("b", [{"kind": "spz", "path": "f/b/b.spz", "size": 5, "sha256": "c" * 64}])
    listing = _files(a, b) | {"f/b/b.spz": 6, "f/zz/zz.ply": 3}
    del listing["f/a/a.ply"]
    view = StoreView("hub", {"train.jsonl": _lines(a, b), "train-shard-1.jsonl": _lines(b) + b"{oops\n"}, listing)
    report = find_problems(view, now=0.0)
    got = {(p.kind, p.subject) for p in report.problems}
    assert got == {("missing_file", "a"), ("size_mismatch", "b"), ("orphan_file", "f/zz/zz.ply"),
                   ("duplicate_row", "b"), ("bad_row", "train-shard-1.jsonl:2")}
    assert report.rows == 2 and not report.ok


def test_files_an_unfinished_migration_still_deletes_are_counted_apart_not_as_orphans() -> None:
    a = _row("a")
    old = {"f/m/m.jpg": 4, "f/m/m.ply": 5, "f/n/n.jpg": 6}  # migrated items' files, their rows already moved
    view = StoreView("hub", {"t.jsonl": _lines(a)}, _files(a) | old | {"f/zz/zz.ply": 3},
                     awaiting_deletion=frozenset({"f/m/", "f/n/n.jpg", a.ply_path, "f/gone/"}))
    report = find_problems(view, now=0.0)
    assert [(p.kind, p.target) for p in report.problems] == [("orphan_file", "f/zz/zz.ply")]  # not listed
    assert report.awaiting_deletion == 3  # a's PLY is listed but its row names it: not counted
    assert "3 old files of migrated items wait for the next" in report.text()
    assert report.to_json()["awaiting_deletion"] == 3


def test_share_fields_the_parquet_index_shows_otherwise_than_the_rows_are_a_mismatch() -> None:
    shared = dataclasses.replace(_row("a"), gsplat_url="https://gsplat.org/viewer/Q", gsplat_share_id="Q")
    b = _row("b")
    blank = {"gsplat_url": "", "gsplat_share_id": "", "gsplat_model_id": ""}
    view = StoreView("hub", {"t.jsonl": _lines(shared, b)}, _files(shared, b), parquet_ids={"a", "b"},
                     parquet_fields={"a": dict(blank), "b": dict(blank)})
    problems = find_problems(view, now=0.0).problems
    assert [(p.kind, p.subject) for p in problems] == [("index_mismatch", "a")]
    assert "gsplat_url, gsplat_share_id" in problems[0].detail and not problems[0].fixable
    view.parquet_fields = {"a": {"gsplat_url": shared.gsplat_url, "gsplat_share_id": "Q", "gsplat_model_id": ""},
                           "b": dict(blank)}
    assert find_problems(view, now=0.0).ok


def test_deep_check_calls_the_hasher() -> None:
    a = _row("a")
    hashes = {a.image_path: "a" * 64, a.ply_path: "0" * 64}
    report = find_problems(StoreView("s", {"t.jsonl": _lines(a)}, _files(a)), now=0.0, hasher=hashes.__getitem__)
    assert [(p.kind, p.target) for p in report.problems] == [("hash_mismatch", a.ply_path)]
    assert report.deep


def test_ledger_view_finds_unrecorded_and_missing_rows_and_index_files() -> None:
    a, b, c = _row("a"), _row("b"), _row("c")
    view = StoreView("local", {"s1.jsonl": _lines(a, c), "stray.jsonl": b""}, _files(a, b),
                     ledger_rows={"a": a, "b": b}, expected_file={"a": "s1.jsonl", "b": "s2.jsonl"},
                     known_index_files={"s1.jsonl", "s2.jsonl"})
    got = {(p.kind, p.subject, p.target) for p in find_problems(view, now=0.0).problems}
    assert got == {("unrecorded_row", "c", "s1.jsonl"), ("missing_row", "b", "s2.jsonl"),
                   ("unrecorded_index_file", "stray.jsonl", "stray.jsonl"),
                   ("missing_index_file", "s2.jsonl", "s2.jsonl")}


def test_lease_checks() -> None:
    leases = [Lease("u1", "x", "n", 0.0, 50.0), Lease("u2", "", "n", 0.0, 500.0), Lease("u3", "y", "n", 10.0, 5.0),
              Lease("u4", "z", "n", 0.0, 500.0), Lease("u5", "w", "n", 0.0, 500.0)]
    got = [(p.kind, p.subject, p.fixable) for p in lease_problems(leases, {"u4"}, now=100.0)]
    assert got == [("expired_lease", "u1", True), ("bad_lease", "u2", True), ("bad_lease", "u3", True),
                   ("lease_on_done_unit", "u4", True)]


def test_report_text_and_json() -> None:
    a = _row("a")
    report = find_problems(StoreView("s", {"t.jsonl": _lines(a)}, {}), now=0.0)
    text = report.text()
    assert "2 problems (missing_file 2)" in text and "(not fixable)" in text and "--fix" not in text
    doc = report.to_json()
    assert doc["ok"] is False and doc["problems"][0]["fixable"] is False
    clean = find_problems(StoreView("s", {"t.jsonl": _lines(a)}, _files(a)), now=0.0)
    assert clean.ok and "consistent" in clean.text()
