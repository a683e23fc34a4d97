"""download(): streamed, checked and atomically renamed, with retries, against a loopback server with faults."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from emulators.files import FileServer, jpeg_bytes
from sharp_dataset_pipeline.errors import PermanentError, RateLimited, TransientError
from sharp_dataset_pipeline.fetch.download import download
from sharp_dataset_pipeline.net import error_reason, make_client

DATA = jpeg_bytes(200, 150, seed=3)


def _get(server: FileServer, dest: Path, *, timeout_s: float = 5.0, **kwargs) -> tuple[int, str]:
    slept: list[float] = []
    kwargs.setdefault("max_bytes", 10_000_000)
    with make_client(timeout_s=timeout_s) as client:
        return download(server.url("/photo.jpg"), dest, client, sleep=slept.append, rng=random.Random(0),
                        **kwargs)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_writes_file_and_returns_size_and_sha256(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    dest = tmp_path / "img" / "a.jpg"
    size, digest = _get(file_server, dest)
    assert (size, digest) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert dest.read_bytes() == DATA
    assert _leftovers(dest.parent) == ["a.jpg"]


def test_5xx_then_ok_is_retried(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    file_server.faults.status(503, times=2)
    size, _ = _get(file_server, tmp_path / "a.jpg", attempts=4)
    assert size == len(DATA)
    assert file_server.hits("/photo.jpg") == 3


def test_status_storm_outlasting_the_attempts_is_transient(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    file_server.faults.status(502, times=10)
    with pytest.raises(TransientError) as info:
        _get(file_server, tmp_path / "a.jpg", attempts=3)
    assert error_reason(info.value) == "http_502"
    assert file_server.hits("/photo.jpg") == 3
    assert _leftovers(tmp_path) == []


def test_404_is_permanent_and_not_retried(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(PermanentError) as info:
        _get(file_server, tmp_path / "a.jpg", attempts=4)
    assert info.value.reason == "http_404"
    assert file_server.hits("/photo.jpg") == 1


def test_truncated_body_is_retried_then_succeeds(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    file_server.faults.truncate(len(DATA) // 3)
    dest = tmp_path / "a.jpg"
    size, digest = _get(file_server, dest, attempts=3)
    assert (size, digest) == (len(DATA), hashlib.sha256(DATA).hexdigest())
    assert dest.read_bytes() == DATA


def test_always_truncated_body_fails_transient_and_leaves_nothing(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    file_server.faults.truncate(100, times=5)
    with pytest.raises(TransientError) as info:
        _get(file_server, tmp_path / "a.jpg", attempts=2)
    assert error_reason(info.value) == "truncated_download"
    assert _leftovers(tmp_path) == []


def test_timeout_then_ok(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    file_server.faults.delay(1.0)
    size, _ = _get(file_server, tmp_path / "a.jpg", attempts=2, timeout_s=0.2)
    assert size == len(DATA)


def test_dropped_connection_then_ok(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    file_server.faults.drop()
    size, _ = _get(file_server, tmp_path / "a.jpg", attempts=2)
    assert size == len(DATA)


def test_over_max_bytes_is_permanent_too_large(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    with pytest.raises(PermanentError) as info:
        _get(file_server, tmp_path / "a.jpg", max_bytes=len(DATA) - 1, attempts=3)
    assert info.value.reason == "too_large"
    assert file_server.hits("/photo.jpg") == 1
    assert _leftovers(tmp_path) == []


def test_429_surfaces_as_rate_limited_with_its_wait(file_server: FileServer, tmp_path: Path) -> None:
    file_server.put("/photo.jpg", DATA)
    file_server.faults.status(429, Retry_After="17")
    with pytest.raises(RateLimited) as info:
        _get(file_server, tmp_path / "a.jpg", attempts=3)
    assert info.value.retry_after_s == 17.0


def test_failed_retry_keeps_an_existing_file_intact(file_server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "a.jpg"
    dest.write_bytes(b"previous complete file")
    file_server.put("/photo.jpg", DATA)
    file_server.faults.truncate(10, times=3)
    with pytest.raises(TransientError):
        _get(file_server, dest, attempts=2)
    assert dest.read_bytes() == b"previous complete file"
    assert _leftovers(tmp_path) == ["a.jpg"]


def test_a_trickling_body_fails_at_the_overall_deadline(file_server: FileServer, tmp_path: Path) -> None:
    import time

    file_server.put("/photo.jpg", DATA)
    file_server.faults.trickle(0.5, times=10)  # each read well inside the 5 s read timeout
    started = time.monotonic()
    with pytest.raises(TransientError) as info:
        _get(file_server, tmp_path / "a.jpg", attempts=3, deadline_s=2.0)
    elapsed = time.monotonic() - started
    assert error_reason(info.value) == "download_deadline"
    assert "FETCH_TIMEOUT_SECS=2s" in str(info.value)
    assert 2.0 <= elapsed < 4.0, elapsed
    assert file_server.hits("/photo.jpg") == 1  # no attempt starts after the deadline
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("url", ["http://", "http://[::1", "https://:80/x.jpg"])
def test_an_unusable_url_is_permanent_at_the_first_try(tmp_path: Path, url: str) -> None:
    """No host or a bad port: no retry can help, so the item fails for good (`bad_url`) instead of being
    retried as a network error on every later run."""
    slept: list[float] = []
    with make_client(timeout_s=5.0) as client, pytest.raises(PermanentError) as info:
        download(url, tmp_path / "a.jpg", client, sleep=slept.append, rng=random.Random(0), max_bytes=1000,
                 attempts=4)
    assert info.value.reason == "bad_url" and slept == []
    assert _leftovers(tmp_path) == []
