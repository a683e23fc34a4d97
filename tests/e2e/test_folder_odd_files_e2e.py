"""Odd entries in a photo folder, through the real CLI: a FIFO named like a photo, a file name that
is not valid UTF-8 and a hidden photo never stop the run; each is published or skipped and counted."""

from __future__ import annotations

import json
import os
from pathlib import Path

from e2e_utils import check_consistent, make_photos, run_cli


def test_fifo_hidden_and_non_utf8_names_leave_the_rest_published(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    good = make_photos(photos, 3, seed=21)
    os.mkfifo(photos / "pipe.jpg")  # opening it for reading would block until a writer comes
    (photos / ".hidden.jpg").write_bytes(good[0].read_bytes()[:-1] + b"\x00")
    odd = os.fsencode(photos) + b"/caf\xe9.jpg"  # Latin-1 "café": not valid UTF-8
    make_photos(tmp_path / "extra", 1, seed=22)[0].rename(odd.decode("utf-8", "surrogateescape"))
    res = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                  "--store", f"local:{store}", "--summary-json", str(tmp_path / "s.json"), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["published"] == 4, summary
    assert summary["skipped"].get("not_a_regular_file") == 1, summary["skipped"]
    assert summary["skipped"].get("hidden") == 1, summary["skipped"]
    rows = check_consistent(store)
    assert {r["source_path"] for r in rows} == {p.name for p in good} | {"caf\ufffd.jpg"}
    assert "pipe.jpg: not a regular file" in res.stdout + res.stderr
