"""``sharp-dataset failures`` and the per-run ``stats.json``, through the real CLI after real runs, on
the local store and on the Hub emulator: every failed item with the input it came from (credentials
removed), its stage, reason, detail, attempts and last time."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_utils import make_photos, run_cli

from emulators.files import FileServer
from emulators.hub import HubEmulator

TOKEN = "hf_failurestoken0123456789"
SECRET = "CNRYfailuresSecret77"


@pytest.fixture(scope="module")
def hub() -> Iterator[HubEmulator]:
    with HubEmulator() as emulator:
        yield emulator


def _target(kind: str, hub: HubEmulator, name: str) -> tuple[str, dict[str, str]]:
    if kind == "local":
        return "local:store", {}
    return f"hf:failures/{name}", {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def _lines(proc) -> list[list[str]]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split("\t") == ["id", "source", "stage", "reason", "attempts", "last", "detail"]
    return [line.split("\t") for line in lines[1:]]


@pytest.mark.parametrize("kind", ["local", "hub"])
def test_failures_of_a_folder_run_name_their_files(kind: str, hub: HubEmulator, tmp_path: Path) -> None:
    store, env = _target(kind, hub, "folder")
    make_photos(tmp_path / "photos", 2, seed=41)
    (tmp_path / "photos" / "empty.jpg").write_bytes(b"")
    (tmp_path / "photos" / "sub").mkdir()
    (tmp_path / "photos" / "sub" / "broken.jpg").write_bytes(b"not a jpeg " * 20)
    started = time.time()
    proc = run_cli(tmp_path, "run", "--source", "folder:photos", "--predictor", "planar", "--store", store,
                   "--planar-resolution", "24", "--run-id", "F1", **env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rows = _lines(run_cli(tmp_path, "failures", "--store", store, **env))
    by_source = {r[1]: r for r in rows}
    assert sorted(by_source) == ["empty.jpg", "sub/broken.jpg"]
    empty, broken = by_source["empty.jpg"], by_source["sub/broken.jpg"]
    assert empty[2:5] == ["fetch", "empty_file", "1"] and "empty file" in empty[6]
    assert broken[2:5] == ["fetch", "not_an_image", "1"]
    last = time.mktime(time.strptime(empty[5], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert started - 2 <= last <= time.time() + 1

    only = _lines(run_cli(tmp_path, "failures", "--store", store, "--reason", "empty_file", **env))
    assert [r[1] for r in only] == ["empty.jpg"]
    doc = json.loads(run_cli(tmp_path, "failures", "--store", store, "--json", **env).stdout)
    assert {d["source"]: (d["stage"], d["reason"], d["attempts"], d["transient"]) for d in doc} == {
        "empty.jpg": ("fetch", "empty_file", 1, False), "sub/broken.jpg": ("fetch", "not_an_image", 1, False)}
    assert all(d["id"] and d["unit"].startswith("folder/") and d["last"].endswith("Z") for d in doc)

    # The run's stats file: counts by status and by reason.
    stats = json.loads((tmp_path / "runs" / "F1" / "stats.json").read_text())
    assert stats["status"] == {"published": 2, "already_published": 0, "skipped": 0, "failed": 2}
    assert stats["failed_by_reason"] == {"empty_file": 1, "not_an_image": 1}

    if kind == "hub":  # compaction folds the ledger batches: the list (and its times) survive it
        assert run_cli(tmp_path, "compact", "--store", store, **env).returncode == 0
        again = _lines(run_cli(tmp_path, "failures", "--store", store, **env))
        assert {r[1]: r[2:6] for r in again} == {r[1]: r[2:6] for r in rows}


@pytest.mark.parametrize("kind", ["local", "hub"])
def test_failures_of_urls_drop_credentials_and_count_attempts(kind: str, hub: HubEmulator, tmp_path: Path,
                                                             file_server: FileServer) -> None:
    store, env = _target(kind, hub, "urls")
    file_server.faults.status(503, times=1000, path="/flaky.jpg")
    host = file_server.url("").split("//", 1)[1]
    gone = f"http://user:{SECRET}@{host}/gone.jpg?token={SECRET}&w=640"
    flaky = file_server.url("/flaky.jpg") + f"?signature={SECRET}"
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"id": "gone", "url": gone}) + "\n" + json.dumps({"id": "flaky", "url": flaky})
                        + "\n", encoding="utf-8")
    for _ in range(2):
        proc = run_cli(tmp_path, "run", "--source", f"manifest:{manifest}", "--predictor", "planar", "--store", store,
                       "--planar-resolution", "24", FETCH_RETRIES="1", **env)
        # Every item fails (a 404, and a 503 outlasting the retries): nothing was published, so exit 1.
        assert proc.returncode == 1, proc.stderr[-3000:]

    listed = run_cli(tmp_path, "failures", "--store", store, **env)
    assert SECRET not in listed.stdout and SECRET not in listed.stderr
    rows = {r[0]: r for r in _lines(listed)}
    assert sorted(rows) == ["flaky", "gone"]
    assert rows["gone"][1] == f"http://{host}/gone.jpg?w=640" and rows["gone"][3] == "http_404"
    assert rows["gone"][4] == "1"  # permanent: never tried again
    assert rows["flaky"][1].startswith(f"http://{host}/flaky.jpg") and rows["flaky"][4] == "2"  # tried by both runs
    doc = json.loads(run_cli(tmp_path, "failures", "--store", store, "--json", **env).stdout)
    assert SECRET not in json.dumps(doc)
    assert {d["id"]: d["transient"] for d in doc} == {"flaky": True, "gone": False}


@pytest.mark.parametrize("kind", ["local", "hub"])
def test_an_item_published_by_a_later_run_leaves_the_failures_list_and_the_status_count(
        kind: str, hub: HubEmulator, tmp_path: Path, file_server: FileServer) -> None:
    """Issue 10 §7: a failure row stays only while the item is unpublished. The file server answers 500
    for one photo during the first run; once it recovers, a rerun publishes it, and neither
    ``failures`` nor ``status`` lists or counts it any more."""
    store, env = _target(kind, hub, "cleared")
    photos = make_photos(tmp_path / "photos", 2, seed=43)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"p{k}", "url": file_server.put(f"/p{k}.jpg", p.read_bytes())})
                                + "\n" for k, p in enumerate(photos)), encoding="utf-8")
    file_server.faults.status(500, times=1000, path="/p1.jpg")
    args = ("run", "--source", f"manifest:{manifest}", "--predictor", "planar", "--store", store,
            "--planar-resolution", "24")
    first = run_cli(tmp_path, *args, FETCH_RETRIES="1", **env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [r[0] for r in _lines(run_cli(tmp_path, "failures", "--store", store, **env))] == ["p1"]
    status = run_cli(tmp_path, "status", "--store", store, "--json", **env)
    assert json.loads(status.stdout)["failed_total"] == 1, status.stdout

    file_server.faults = type(file_server.faults)()  # the server recovers
    second = run_cli(tmp_path, *args, **env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "published 1" in second.stdout + second.stderr
    assert _lines(run_cli(tmp_path, "failures", "--store", store, **env)) == []
    report = json.loads(run_cli(tmp_path, "status", "--store", store, "--json", **env).stdout)
    assert (report["published"], report["failed_total"], report["failed"]) == (2, 0, {})
    text = run_cli(tmp_path, "status", "--store", store, **env).stdout
    assert "2 published, 0 failed (none)" in text
