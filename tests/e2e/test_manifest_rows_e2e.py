"""Manifest rows through the real CLI: a repeated id is caught at the source (first row wins, the
others skipped with their row numbers), so it can never poison later runs; ``file://`` rows are
read as local photos."""

from __future__ import annotations

import json
from pathlib import Path

from e2e_utils import check_consistent, make_photos, run_cli

from emulators.files import FileServer, jpeg_bytes


def _run(tmp: Path, manifest: Path, store: Path, name: str):
    return run_cli(tmp, "run", "--source", f"manifest:{manifest}", "--predictor", "planar",
                   "--store", f"local:{store}", "--summary-json", str(tmp / f"{name}.json"), "--run-id", name)


def test_repeated_ids_are_skipped_at_the_source_and_file_urls_are_local_photos(tmp_path: Path) -> None:
    store = tmp_path / "out"
    local = make_photos(tmp_path / "local", 1, seed=31)[0]
    with FileServer() as files:
        a1 = files.put("/a1.jpg", jpeg_bytes(80, 60, seed=1))
        other = files.put("/other.jpg", jpeg_bytes(120, 90, seed=2))  # another photo under the same id
        b1 = files.put("/b1.jpg", jpeg_bytes(seed=3))
        manifest = tmp_path / "m.csv"
        manifest.write_text(
            "id,url\n"
            f"a1,{a1}\n"          # row 1: wins
            f"a1,{other}\n"       # row 2: same id, other URL
            f"b1,{b1}\n"          # row 3
            f"b1,{b1}\n"          # row 4: the very same row again
            f"l1,{local.as_uri()}\n"           # row 5: a local photo
            "r1,file://elsewhere/x.jpg\n"      # row 6: another machine's file
            f"c2,{a1}\n"                       # row 7: row 1's photo under another id
            f",{a1}\n",                        # row 8: the same again, without an id
            encoding="utf-8")
        first = _run(tmp_path, manifest, store, "r1")
        second = _run(tmp_path, manifest, store, "r2")
        other_hits = files.hits("/other.jpg")
        a1_hits = files.hits("/a1.jpg")
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout + first.stderr
    assert "manifest row 2 skipped: duplicate_id of row 1 (id a1)" in out
    assert "manifest row 4 skipped: duplicate_row of row 3 (id b1)" in out
    assert "manifest row 7 skipped: duplicate_url of row 1 (id c2)" in out
    assert "manifest row 8 skipped: duplicate_url of row 1" in out
    summary = json.loads((tmp_path / "r1.json").read_text())
    assert summary["published"] == 3 and summary["failed"] == {}, summary
    assert summary["skipped"] == {"duplicate_id": 1, "duplicate_row": 1, "duplicate_url": 2,
                                  "remote_file_url": 1}, summary
    assert other_hits == 0  # the repeated row was never fetched
    assert a1_hits == 1  # one photo, one download, one row
    rows = {r["id"]: r for r in check_consistent(store)}
    assert set(rows) == {"a1", "b1", "l1"}
    assert (rows["a1"]["width"], rows["a1"]["height"]) == (80, 60)  # the first row's photo
    assert rows["l1"]["source_path"] == str(local) and rows["l1"]["image_sha256"]
    # A later run is not poisoned: it finds everything done and publishes nothing, cleanly.
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads((tmp_path / "r2.json").read_text())
    assert again["published"] == 0 and again["failed"] == {}, again
    assert len(check_consistent(store)) == 3


def test_a_trickling_url_fails_at_fetch_timeout_and_the_rest_is_published(tmp_path: Path) -> None:
    import time

    store = tmp_path / "out"
    with FileServer() as files:
        good = [files.put(f"/g{i}.jpg", jpeg_bytes(seed=40 + i)) for i in range(2)]
        slow = files.put("/slow.jpg", jpeg_bytes(seed=50))
        files.faults.trickle(2.0, path="/slow.jpg", times=10)  # one byte every 2 s: never a read timeout
        manifest = tmp_path / "m.csv"
        manifest.write_text("id,url\n" + "".join(f"g{i},{u}\n" for i, u in enumerate(good)) + f"s1,{slow}\n",
                            encoding="utf-8")
        started = time.monotonic()
        res = run_cli(tmp_path, "run", "--source", f"manifest:{manifest}", "--predictor", "planar",
                      "--store", f"local:{store}", "--summary-json", str(tmp_path / "s.json"), timeout=120,
                      FETCH_TIMEOUT_SECS="4", FETCH_RETRIES="3")
        elapsed = time.monotonic() - started
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["published"] == 2 and summary["failed"] == {"download_deadline": 1}, summary
    assert "item s1 failed at fetch: download_deadline" in res.stdout + res.stderr
    assert elapsed < 40, elapsed


def test_rows_appended_to_a_manifest_are_published_by_the_next_run(tmp_path: Path) -> None:
    """The manifest grows between runs (a new batch of photos listed at its end): the next run publishes the
    new rows, those that fall in the unit an earlier run finished included, and nothing twice."""
    store = tmp_path / "out"
    photos = make_photos(tmp_path / "p", 8, seed=41)
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,url\n" + "".join(f"p{i},{p.as_uri()}\n" for i, p in enumerate(photos[:5])))
    first = _run(tmp_path, manifest, store, "g1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((tmp_path / "g1.json").read_text())["published"] == 5
    with manifest.open("a") as fh:  # three more rows, inside the first unit of RANGE_SIZE rows
        fh.write("".join(f"p{i},{p.as_uri()}\n" for i, p in enumerate(photos) if i >= 5))
    second = _run(tmp_path, manifest, store, "g2")
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((tmp_path / "g2.json").read_text())
    assert summary["published"] == 3 and summary["failed"] == {}, summary
    rows = check_consistent(store)
    assert sorted(r["id"] for r in rows) == [f"p{i}" for i in range(8)]
