"""Invariant 9 (hub part): a token set in the environment is used, yet never appears in a log line,
an error, the budget/metrics report, a published file or the store's read cache."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from emulators.hub import HubEmulator, HubFaults, ManualClock, make_items
from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.records import Batch, Failure, Followup, Unit
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore

REPO = "tester/secret"


def _capture_logs() -> tuple[io.StringIO, list[tuple[logging.Logger, int]]]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    touched = []
    for name in ("", "huggingface_hub", "httpx2", "httpcore2", "sharp_dataset_pipeline"):
        logger = logging.getLogger(name)
        touched.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    return buffer, touched


def test_env_token_never_leaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "hf_" + secrets.token_hex(16)
    monkeypatch.setenv("HF_TOKEN", canary)
    # The client's most verbose request logging (it prints each request as a curl command).
    monkeypatch.setattr(hf_constants, "HF_DEBUG", True)
    clock = ManualClock()
    buffer, touched = _capture_logs()
    errors: list[str] = []
    cache = tmp_path / "cache"
    try:
        with HubEmulator(clock=clock) as hub:
            store = HubStore(HubOptions(REPO, endpoint=hub.url, token=None, client_id="leaky?", cache_dir=cache,
                                        layout="files",
                                        auto_compact_shards=2), clock=clock, sleep=clock.sleep)
            store.open()
            assert store.acquire(Unit("u/1", 0, 9), "leaky?", 600) is not None
            hub.set_faults(HubFaults(script=[409, 412, 429, "500-after", "drop-after"], lag_reads=1))
            for n in range(3):
                store.publish(Batch("leaky?", items=make_items(tmp_path / "i", [f"a{n}"], unit="u/1"),
                                    failures=[Failure(f"f{n}", "u/1", "fetch", "http_500", f"detail {n}", True)],
                                    followups=[Followup("track", f"a{n}", "payload")], renew_units=["u/1"],
                                    lease_ttl_s=600))
            hub.set_faults(HubFaults(script=[401, 403, 400]))  # refusals (a 404 is re-planned)
            for _ in range(3):
                try:
                    store.publish(Batch("leaky?", items=make_items(tmp_path / "i", ["never"])))
                except StoreError as exc:
                    errors += [str(exc), repr(exc), repr(exc.__cause__), repr(exc.__context__)]
            store.item_states(["a0", "f1"])
            store.compact()
            report = json.dumps(store.budget_report())
            published = b"".join(hub.blobs.values())
            assert hashlib_of(canary) in hub.token_hashes, "the env token was not used at all"
            store.close()
    finally:
        for logger, level in touched:
            logger.setLevel(level)
            for handler in list(logger.handlers):
                if isinstance(handler, logging.StreamHandler) and handler.stream is buffer:
                    logger.removeHandler(handler)
    logs = buffer.getvalue()
    assert "publish" in logs or "hub" in logs  # logging was really captured
    assert len(errors) == 12
    assert canary not in logs
    assert all(canary not in e for e in errors)
    assert canary not in report
    assert canary.encode() not in published
    for path in cache.rglob("*") if cache.exists() else []:
        if path.is_file():
            assert canary.encode() not in path.read_bytes()


def hashlib_of(token: str) -> str:
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()


def test_credentials_in_image_urls_never_reach_the_hub_repo(tmp_path: Path, file_server) -> None:
    """Through the CLI onto the Hub emulator: a URL that downloads although it carries every credential kind
    is published without them; no commit (index, .coord/batches, card) and no local file holds a canary."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from canary_utils import ENV_TOKEN, canary_manifest, leaks, tree_bytes
    from e2e_utils import run_cli

    from emulators.hub import index_rows

    manifest, clean_url = canary_manifest(tmp_path, file_server)
    work = tmp_path / "work"
    work.mkdir()
    with HubEmulator() as hub:
        res = run_cli(work, "run", "--source", f"manifest:{manifest}", "--predictor", "planar", "--store",
                      f"hf:{REPO}", "--log-level", "DEBUG", "--summary-json", str(work / "s.json"),
                      "--run-id", "canary", HF_ENDPOINT=hub.url, HF_TOKEN=ENV_TOKEN, CLIENT_ID="canary",
                      HF_HUB_DISABLE_PROGRESS_BARS="1", FETCH_RETRIES="1")
        assert res.returncode == 0, res.stderr
        files = hub.files(REPO)
        every_blob = dict(hub.blobs)
        titles = [c.title for r in hub.repos.values() for c in r.commits.values()]
    summary = json.loads((work / "s.json").read_text())
    assert summary["published"] == 1 and summary["failed"] == {"http_404": 1}, summary
    assert [(r["id"], r["source_url"]) for r in index_rows(files)] == [("good", clean_url)]
    batches = [json.loads(v) for p, v in files.items() if p.startswith(".coord/batches/")]
    recorded = [text for text in map(json.dumps, batches) if "gone.jpg?" in text]
    assert recorded, "the failure (with its URL) was not recorded in .coord/batches"
    assert all("***" in text and "w=640" in text for text in recorded), recorded
    found = leaks({"stdout": res.stdout.encode(), "stderr": res.stderr.encode(),
                   "commit titles": "\n".join(titles).encode(), **{f"hub blob {k}": v for k, v in every_blob.items()},
                   **tree_bytes(work), **tree_bytes(Path(os.environ["HF_HOME"]))})
    assert not found, found
