"""``<run folder>/items.jsonl`` through the real CLI: one line per input with its final status
(published, skipped, failed), its source without credentials, and for a repeat the input it repeats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from e2e_utils import make_photos, run_cli

from emulators.files import FileServer, jpeg_bytes

KEYS = {"id", "source", "status", "reason", "stage", "detail", "duplicate_of"}


def _items(summary_json: Path) -> list[dict]:
    run_dir = Path(json.loads(summary_json.read_text())["run_dir"])
    lines = (run_dir / "items.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _by_source(items: list[dict]) -> dict[str, dict]:
    by_source = {i["source"]: i for i in items}
    assert len(by_source) == len(items), f"an input has more than one line: {items}"
    return by_source


def test_folder_run_writes_one_status_line_per_input(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    good = make_photos(photos, 2, seed=41)
    (photos / "empty.jpg").write_bytes(b"")
    shutil.copyfile(good[0], photos / "zz_copy.jpg")
    summary = tmp_path / "s.json"
    res = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                  "--store", f"local:{store}", "--summary-json", str(summary))
    assert res.returncode == 0, res.stderr[-3000:]
    items = _items(summary)
    assert all(set(i) == KEYS for i in items), items
    lines = _by_source(items)
    assert set(lines) == {good[0].name, good[1].name, "empty.jpg", "zz_copy.jpg"}, items
    for photo in good:
        assert lines[photo.name]["status"] == "published", lines[photo.name]
    assert lines["empty.jpg"]["status"] == "failed"
    assert (lines["empty.jpg"]["stage"], lines["empty.jpg"]["reason"]) == ("fetch", "empty_file")
    copy = lines["zz_copy.jpg"]
    assert (copy["status"], copy["reason"], copy["duplicate_of"]) == ("skipped", "duplicate_content", good[0].name)
    assert copy["id"] == lines[good[0].name]["id"]  # the same content, so the same item
    # `failures --skips` lists the repeats of this store's runs, with what they repeat.
    other = tmp_path / "other-photos"
    other.mkdir()
    shutil.copyfile(good[1], other / "again.jpg")
    shutil.copyfile(good[1], other / "again2.jpg")
    res = run_cli(tmp_path, "run", "--source", f"folder:{other}", "--predictor", "planar",
                  "--store", f"local:{tmp_path / 'elsewhere'}")
    assert res.returncode == 0, res.stderr[-3000:]
    listed = run_cli(tmp_path, "failures", "--store", f"local:{store}", "--skips")
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert rows[0] == ["id", "source", "reason", "duplicate_of", "run", "detail"], rows
    assert [r[:4] for r in rows[1:]] == [[copy["id"], "zz_copy.jpg", "duplicate_content", good[0].name]], rows
    assert rows[1][4] == Path(json.loads(summary.read_text())["run_dir"]).name
    elsewhere = json.loads(run_cli(tmp_path, "failures", "--store", f"local:{tmp_path / 'elsewhere'}", "--skips",
                                   "--json").stdout)
    assert [(d["source"], d["duplicate_of"]) for d in elsewhere] == [("again2.jpg", "again.jpg")], elsewhere


def test_manifest_repeats_name_the_row_they_repeat_and_urls_lose_credentials(tmp_path: Path) -> None:
    secret = "s3cr3tItemsSignature"
    store = tmp_path / "out"
    with FileServer() as files:
        files.put("/a1.jpg", jpeg_bytes(80, 60, seed=1))
        signed = files.url(f"/a1.jpg?X-Amz-Signature={secret}&w=80")
        other = files.put("/other.jpg", jpeg_bytes(120, 90, seed=2))
        gone = files.url(f"/gone.jpg?client_id={secret}")
        manifest = tmp_path / "m.csv"
        manifest.write_text(f"id,url\na1,{signed}\na1,{other}\na1,{signed}\ng1,{gone}\n", encoding="utf-8")
        summary = tmp_path / "s.json"
        res = run_cli(tmp_path, "run", "--source", f"manifest:{manifest}", "--predictor", "planar",
                      "--store", f"local:{store}", "--summary-json", str(summary))
        clean, gone_clean = files.url("/a1.jpg?w=80"), files.url("/gone.jpg")
    assert res.returncode == 0, res.stderr[-3000:]
    items = _items(summary)
    text = json.dumps(items)
    assert secret not in text
    assert len(items) == 4, items
    by_reason = {i["reason"]: i for i in items}
    first, missing = by_reason[""], by_reason["http_404"]
    assert (first["id"], first["status"], first["source"]) == ("a1", "published", clean), first
    repeat_id, repeat_row = by_reason["duplicate_id"], by_reason["duplicate_row"]
    assert (repeat_id["status"], repeat_id["source"], repeat_id["duplicate_of"]) == ("skipped", other, clean)
    assert repeat_id["detail"] == "row 2 repeats the id of row 1", repeat_id
    assert (repeat_row["status"], repeat_row["source"], repeat_row["duplicate_of"]) == ("skipped", clean, clean)
    assert repeat_row["detail"] == "row 3 repeats the id of row 1", repeat_row
    assert (missing["id"], missing["status"], missing["stage"], missing["source"]) == (
        "g1", "failed", "fetch", gone_clean), missing


def test_inputs_the_run_did_not_reach_get_a_line_too(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    make_photos(photos, 4, seed=43)
    summary = tmp_path / "s.json"
    res = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                  "--store", f"local:{store}", "--summary-json", str(summary), MAX_IMAGES="1")
    assert res.returncode == 0, res.stderr[-3000:]
    lines = _by_source(_items(summary))
    assert len(lines) == 4, lines
    statuses = sorted((i["status"], i["reason"]) for i in lines.values())
    assert statuses == [("published", "")] + [("skipped", "run_ended")] * 3, statuses
