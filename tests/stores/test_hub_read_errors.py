"""Reads and commits of the Hub share one status → error mapper (``hub_retry.answer_of``), from real
client exception objects; reads are repeated by ``net.call_with_retries``, honouring ``Retry-After``."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

from sharp_dataset_pipeline.errors import RateLimited, StoreError, TransientError
from sharp_dataset_pipeline.stores import hub_retry
from sharp_dataset_pipeline.stores.hub_sync import HubSync


def _error(status: int, headers: dict[str, str] | None = None, cls: type = HfHubHTTPError) -> HfHubHTTPError:
    request = httpx2.Request("GET", "http://hub.invalid/api/datasets/a/b/tree/main")
    response = httpx2.Response(status, headers=headers or {}, request=request, json={"error": "no"})
    return cls(f"{status} error", response=response, server_message="no")


@pytest.mark.parametrize(("exc", "kind"), [
    (_error(429, {"Retry-After": "42"}), RateLimited), (_error(500), TransientError), (_error(408), TransientError),
    (httpx2.ConnectError("refused"), TransientError), (TimeoutError(), TransientError),
    (_error(403), StoreError), (_error(412), StoreError), (_error(409), StoreError),
    (_error(404, cls=RepositoryNotFoundError), StoreError)])
def test_a_read_failure_maps_to_one_error(exc: BaseException, kind: type) -> None:
    err = hub_retry.read_error(exc, "reading a/b", "a/b", 0.0)
    assert type(err) is kind
    if kind is RateLimited:
        assert err.retry_after_s == 42.0  # type: ignore[attr-defined]


def test_a_read_refused_for_access_says_to_check_the_token() -> None:
    for status in (401, 403):
        text = str(hub_retry.read_error(_error(status), "a read of a/b", "a/b", 0.0))
        assert text.startswith(f"hub refused a read of a/b with {status} (") and "HF_TOKEN" in text
    assert "HF_TOKEN" not in str(hub_retry.read_error(_error(400), "a read of a/b", "a/b", 0.0))


def test_reads_and_commits_agree_on_the_outcome() -> None:
    for status, outcome in ((412, "conflict"), (409, "busy"), (429, "rate"), (503, "unknown"), (401, "refused")):
        answer = hub_retry.answer_of(_error(status), 0.0, 0)
        assert answer is not None and (answer.outcome, answer.status) == (outcome, status)
    assert hub_retry.answer_of(_error(404, cls=RepositoryNotFoundError), 0.0, 0).outcome == "missing"  # type: ignore[union-attr]
    bug = KeyError("bug")
    assert hub_retry.answer_of(bug, 0.0, 0) is None and hub_retry.read_error(bug, "x", "a/b", 0.0) is bug


def _sync(tmp_path: Path, sleeps: list[float]) -> HubSync:
    return HubSync(None, "a/b", "dataset", "data/index", clock=lambda: 0.0, sleep=sleeps.append,
                   commits_per_hour=100, api_calls_per_5min=1000, warn_files=10**9, retry_base_s=0.01,
                   max_rate_wait_s=60.0, cache_dir=tmp_path, own_cache=False, rng=random.Random(0))


def _answering(answers: list[Any]) -> Callable[[], Any]:
    """A read that raises or returns the next of ``answers`` each time it is called."""
    def read() -> Any:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer
    return read


def test_a_pinned_read_answered_429_waits_as_told_then_succeeds(tmp_path: Path) -> None:
    sleeps: list[float] = []
    answers: list[Any] = [_error(429, {"Retry-After": "7"}), b"bytes"]

    assert _sync(tmp_path, sleeps).read_at("0" * 40, _answering(answers)) == b"bytes"
    assert sleeps == [7.0]


@pytest.mark.parametrize("how", ["api_call", "read_at"])
def test_both_read_paths_refuse_and_give_up_alike(tmp_path: Path, how: str) -> None:
    sync = _sync(tmp_path, [])

    def call(exc: BaseException) -> Any:
        def fail() -> Any:
            raise exc
        return sync.api_call(fail) if how == "api_call" else sync.read_at("0" * 40, fail)

    with pytest.raises(StoreError, match="refused .* with 403"):
        call(_error(403))
    with pytest.raises(StoreError, match="not found"):
        call(_error(404, cls=RepositoryNotFoundError))
    with pytest.raises(StoreError, match="hub unreachable for a/b"):
        call(_error(502))
    with pytest.raises(KeyError):  # a bug is not a network error
        call(KeyError("bug"))


def _not_cached(cause: BaseException | None) -> LocalEntryNotFoundError:
    """What hf_hub_download raises when its metadata request failed and the file is not cached."""
    exc = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub")
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(("cause", "kind"), [
    (_error(503), TransientError), (_error(429, {"Retry-After": "9"}), RateLimited),
    (httpx2.ConnectError("refused"), TransientError), (None, TransientError), (_error(403), StoreError)])
def test_a_download_the_hub_could_not_answer_maps_by_its_cause(cause: BaseException | None, kind: type) -> None:
    err = hub_retry.read_error(_not_cached(cause), "reading a/b", "a/b", 0.0)
    assert type(err) is kind
    if kind is RateLimited:
        assert err.retry_after_s == 9.0  # type: ignore[attr-defined]


def test_a_download_during_an_outage_is_retried_then_read(tmp_path: Path) -> None:
    sleeps: list[float] = []
    answers: list[Any] = [_not_cached(_error(503)), _not_cached(httpx2.ConnectError("lost")), b"bytes"]

    assert _sync(tmp_path, sleeps).read_at("0" * 40, _answering(answers)) == b"bytes"
    assert len(sleeps) == 2 and not answers
