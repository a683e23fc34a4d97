"""Invariant 9 (local store and CLI part): tokens and keys never appear in logs, errors, index rows, the
ledger, metrics or published files, even when an image URL that downloads fine carries them."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from canary_utils import ENV_KEY, ENV_TOKEN, canary_manifest, leaks, tree_bytes  # noqa: E402
from e2e_utils import read_rows, run_cli  # noqa: E402

from emulators.files import FileServer  # noqa: E402


def test_secrets_never_leak_into_outputs(tmp_path: Path, file_server: FileServer) -> None:
    manifest, clean_url = canary_manifest(tmp_path, file_server)
    work = tmp_path / "work"
    work.mkdir()
    store = work / "out"
    res = run_cli(work, "run", "--source", f"manifest:{manifest}", "--predictor", "planar", "--store",
                  f"local:{store}", "--log-level", "DEBUG", "--summary-json", str(work / "s.json"),
                  "--run-id", "canary", UNSPLASH_ACCESS_KEY=ENV_KEY, HF_TOKEN=ENV_TOKEN, FETCH_RETRIES="1")
    assert res.returncode == 0, res.stderr
    summary = json.loads((work / "s.json").read_text())
    assert summary["published"] == 1 and summary["failed"] == {"http_404": 1}, summary
    # The credential-bearing URL was downloaded, and published without its credentials.
    assert file_server.hits("/ok.jpg") >= 1
    rows = read_rows(store)
    assert [(r["id"], r["source_url"]) for r in rows] == [("good", clean_url)]
    with sqlite3.connect(store / ".coord" / "ledger.sqlite3") as db:
        ((row_json,),) = db.execute("SELECT row FROM items WHERE id = 'good'").fetchall()
        ((detail,),) = db.execute("SELECT detail FROM failures WHERE item_id = 'gone'").fetchall()
        dump = "\n".join(db.iterdump())
    assert json.loads(row_json)["source_url"] == clean_url
    assert "HTTP 404" in detail and "/gone.jpg?" in detail and "&w=640" in detail and "***" in detail, detail
    assert (work / "runs" / "canary").is_dir(), "the run folder (logs, metrics) was not where expected"
    found = leaks({"stdout": res.stdout.encode(), "stderr": res.stderr.encode(), "ledger dump": dump.encode(),
                   **tree_bytes(work)})
    assert not found, found
