"""Every failure names the input it came from (a folder-relative path, or a URL without credentials),
in the log line and in both stores' ledgers; a ``duplicate_content`` skip names the item it repeats."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from e2e_utils import make_photos, run_cli

from emulators.files import FileServer, jpeg_bytes
from emulators.hub import HubEmulator

REPO = "me/splats"
TOKEN = "hf_e2efailuresource0123456789"


def _ledger_failures(store: Path) -> dict[str, dict]:
    conn = sqlite3.connect(store / ".coord" / "ledger.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return {r["source"]: dict(r) for r in conn.execute("SELECT * FROM failures")}
    finally:
        conn.close()


def test_folder_failures_name_their_file_in_log_and_local_ledger(tmp_path: Path) -> None:
    photos, store = tmp_path / "photos", tmp_path / "out"
    good = make_photos(photos, 2, seed=3)
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "sub").mkdir()
    (photos / "sub" / "text.jpg").write_bytes(b"this is not a picture\n" * 10)
    shutil.copyfile(good[0], photos / "zz_copy.jpg")
    res = run_cli(tmp_path, "run", "--source", f"folder:{photos}", "--predictor", "planar",
                  "--store", f"local:{store}", "--summary-json", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "failed at fetch: empty_file (empty.jpg: empty file)" in out, out[-3000:]
    assert "failed at fetch: not_an_image (sub/text.jpg: not an image" in out
    assert ".part" not in out, "a failure names a temp file"
    assert f"zz_copy.jpg: duplicate_content of {good[0].name}" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["published"] == 2
    failures = _ledger_failures(store)
    assert set(failures) == {"empty.jpg", "sub/text.jpg"}
    assert failures["empty.jpg"]["reason"] == "empty_file"
    assert failures["sub/text.jpg"]["reason"] == "not_an_image"


def test_url_failures_name_the_url_without_credentials_on_the_hub(tmp_path: Path) -> None:
    secret = "s3cr3tSignatureValue"
    with FileServer() as files, HubEmulator() as hub:
        ok = files.put("/ok.jpg", jpeg_bytes(seed=1))
        files.put("/text.jpg", b"not a picture at all\n" * 10)
        bad = files.url(f"/text.jpg?X-Amz-Signature={secret}&token={secret}&w=400")
        gone = files.url(f"/gone.jpg?client_id={secret}")
        manifest = tmp_path / "m.csv"
        manifest.write_text(f"id,url\nok1,{ok}\nbad1,{bad}\ngone1,{gone}\n", encoding="utf-8")
        res = run_cli(tmp_path, "run", "--source", f"manifest:{manifest}", "--predictor", "planar",
                      "--store", f"hf:{REPO}", CLIENT_ID="c1", HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN,
                      HF_HUB_DISABLE_PROGRESS_BARS="1")
        assert res.returncode == 0, res.stderr[-3000:]
        out = res.stdout + res.stderr
        assert secret not in out
        recorded = {}
        for path, data in hub.files(REPO).items():
            assert secret.encode() not in data, path
            if path.startswith(".coord/") and path.endswith(".json"):
                for f in json.loads(data).get("failures", []):
                    recorded[f["item_id"]] = f
        bad_clean, gone_clean = files.url("/text.jpg?w=400"), files.url("/gone.jpg")
    assert recorded["bad1"]["source"] == bad_clean
    assert recorded["bad1"]["reason"] == "not_an_image"
    assert recorded["gone1"]["source"] == gone_clean
    assert recorded["gone1"]["reason"] == "http_404"
    assert f"failed at fetch: not_an_image ({bad_clean}: not an image" in out
