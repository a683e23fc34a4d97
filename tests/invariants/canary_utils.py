"""Canary helpers for invariant 9: a manifest whose image URL carries every kind of credential and still
downloads, a second one that fails (so the credentials also pass through an error), and a search of bytes
for the canary values."""

from __future__ import annotations

import json
from pathlib import Path

from emulators.files import FileServer

# One distinct canary value per credential-bearing query parameter, so a leak names its parameter.
SECRET_PARAMS = ("client_id", "access_token", "token", "key", "api_key", "sig", "signature", "X-Amz-Credential",
                 "X-Amz-Signature", "X-Amz-Security-Token", "X-Goog-Signature", "Signature", "Policy",
                 "Key-Pair-Id", "my_secret", "password", "auth")
CANARIES = {name: f"CNRY{i:02d}q{name.replace('-', '').replace('_', '')}Zx9" for i, name in enumerate(SECRET_PARAMS)}
KEEP = "ixid=M3wKEEP&w=1080&q=80&fm=jpg"  # harmless params of an Unsplash image URL: kept verbatim
ENV_KEY = "unsplashCANARYkey0123456789"
ENV_TOKEN = "hf_CANARYtokenABCDEFGHIJKLMNOPQRSTUV"


def secret_query() -> str:
    return "&".join(f"{name}={value}" for name, value in CANARIES.items())


def canary_manifest(tmp_path: Path, file_server: FileServer) -> tuple[Path, str]:
    """A manifest of two rows: ``good`` (downloads although its URL carries every credential) and ``gone``
    (404, so the credentials appear in an error); returns it and the URL ``good`` must be published with."""
    from PIL import Image

    img = tmp_path / "ok.jpg"
    Image.new("RGB", (32, 24), (200, 100, 50)).save(img)
    clean = file_server.put("/ok.jpg", img.read_bytes()) + "?" + KEEP
    good = f"{file_server.url('/ok.jpg')}?ixid=M3wKEEP&{secret_query()}&w=1080&q=80&fm=jpg"
    gone = f"{file_server.url('/gone.jpg')}?{secret_query()}&w=640"
    manifest = tmp_path / "manifest" / "list.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"id": "good", "url": good}) + "\n" + json.dumps({"id": "gone", "url": gone})
                        + "\n", encoding="utf-8")
    return manifest, clean


def leaks(blobs: dict[str, bytes]) -> list[str]:
    """Every (place, canary name) where a canary value appears in ``blobs``."""
    values = {**CANARIES, "UNSPLASH_ACCESS_KEY": ENV_KEY, "HF_TOKEN": ENV_TOKEN}
    return [f"{place}: {name}" for place, data in blobs.items() for name, value in values.items()
            if value.encode() in data]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}
