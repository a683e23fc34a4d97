"""Invariant 9 (local store and CLI part): tokens and keys never appear in logs, errors, index rows,
metrics or published files, even when a URL or an error would carry them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_utils import run_cli  # noqa: E402

from emulators.files import FileServer  # noqa: E402

CANARY_KEY = "unsplashCANARYkey0123456789"
CANARY_TOKEN = "hf_CANARYtokenABCDEFGHIJKLMNOPQRSTUV"


def _all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_secrets_never_leak_into_outputs(tmp_path: Path, file_server: FileServer) -> None:
    from PIL import Image

    img = tmp_path / "ok.jpg"
    Image.new("RGB", (32, 24), (200, 100, 50)).save(img)
    ok_url = file_server.put("/ok.jpg", img.read_bytes())
    leaky_url = file_server.url(f"/missing.jpg?client_id={CANARY_KEY}&access_token={CANARY_TOKEN}")
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"id": "good", "url": ok_url}) + "\n" + json.dumps({"id": "leaky", "url": leaky_url})
                        + "\n")
    work = tmp_path / "work"
    work.mkdir()
    res = run_cli(work, "run", "--source", f"manifest:{manifest}", "--predictor", "planar", "--store",
                  f"local:{work / 'out'}", "--log-level", "DEBUG", "--summary-json", str(work / "s.json"),
                  UNSPLASH_ACCESS_KEY=CANARY_KEY, HF_TOKEN=CANARY_TOKEN, FETCH_RETRIES="1")
    assert res.returncode == 0, res.stderr
    summary = json.loads((work / "s.json").read_text())
    assert summary["published"] == 1 and sum(summary["failed"].values()) == 1
    for text in (res.stdout, res.stderr):
        assert CANARY_KEY not in text and CANARY_TOKEN not in text
    for path, data in _all_bytes(work):
        assert CANARY_KEY.encode() not in data, f"key leaked into {path}"
        assert CANARY_TOKEN.encode() not in data, f"token leaked into {path}"
