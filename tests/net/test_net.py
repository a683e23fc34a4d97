"""net.py: backoff, the retry helper, the status mapper, redaction, and the client against a loopback server."""

from __future__ import annotations

import email.utils
import random

import httpx
import pytest

from sharp_dataset_pipeline import __version__
from sharp_dataset_pipeline.errors import PermanentError, RateLimited, TransientError
from sharp_dataset_pipeline.net import (
    backoff_delays,
    call_with_retries,
    error_reason,
    make_client,
    parse_retry_after,
    raise_for_status,
)
from sharp_dataset_pipeline.redact import redact

SECRET = "sk_live_9f8e7d6c5b4a"


def test_backoff_delays_are_full_jitter_within_exponential_caps() -> None:
    delays = backoff_delays(7, 0.5, 4.0, random.Random(1))
    assert len(delays) == 6
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(0.0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert delays == backoff_delays(7, 0.5, 4.0, random.Random(1))  # seeded: reproducible
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder
    assert backoff_delays(1, 0.5, 4.0, random.Random(1)) == []


class Flaky:
    """Fails with the given errors in order, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_retries_transient_then_succeeds_and_reports_each_retry() -> None:
    fn, slept, seen = Flaky(TransientError("a"), TransientError("b")), [], []
    result = call_with_retries(fn, attempts=3, base_s=1.0, max_s=8.0, sleep=slept.append,
                               on_retry=lambda n, e, d: seen.append((n, str(e), d)), rng=random.Random(0))
    assert result == "ok" and fn.calls == 3
    assert [s[:2] for s in seen] == [(1, "a"), (2, "b")]
    assert slept == [s[2] for s in seen]


def test_gives_up_after_attempts_with_the_last_error() -> None:
    fn = Flaky(*(TransientError(f"e{i}") for i in range(5)))
    with pytest.raises(TransientError, match="e2"):
        call_with_retries(fn, attempts=3, base_s=0.0, max_s=0.0, sleep=lambda s: None)
    assert fn.calls == 3


def test_permanent_errors_are_not_retried() -> None:
    fn = Flaky(PermanentError("gone", reason="http_404"))
    with pytest.raises(PermanentError):
        call_with_retries(fn, attempts=5, base_s=0.0, max_s=0.0, sleep=lambda s: None)
    assert fn.calls == 1


def test_rate_limited_propagates_unless_the_caller_opts_in() -> None:
    fn = Flaky(RateLimited("slow down", retry_after_s=7.0))
    with pytest.raises(RateLimited):
        call_with_retries(fn, attempts=3, base_s=0.1, max_s=0.1, sleep=lambda s: None)
    assert fn.calls == 1

    fn, slept = Flaky(RateLimited("slow down", retry_after_s=7.0)), []
    assert call_with_retries(fn, attempts=3, base_s=0.1, max_s=0.1, sleep=slept.append,
                             retry_on=(TransientError, RateLimited)) == "ok"
    assert slept == [7.0]  # the server's wait, not the (shorter) backoff


def test_transport_errors_become_transient_and_are_retried() -> None:
    fn = Flaky(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    assert call_with_retries(fn, attempts=3, base_s=0.0, max_s=0.0, sleep=lambda s: None) == "ok"
    fn = Flaky(httpx.ReadTimeout("slow"))
    with pytest.raises(TransientError) as info:
        call_with_retries(fn, attempts=1, base_s=0.0, max_s=0.0, sleep=lambda s: None)
    assert error_reason(info.value) == "timeout"


def _response(status: int, headers: dict[str, str] | None = None, url: str = "https://api.test/x") -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, request=httpx.Request("GET", url))


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (200, None, ""), (204, None, ""), (304, None, ""),
        (408, TransientError, "http_408"), (425, TransientError, "http_425"),
        (500, TransientError, "http_500"), (502, TransientError, "http_502"), (503, TransientError, "http_503"),
        (429, RateLimited, "http_429"),
        (400, PermanentError, "http_400"), (401, PermanentError, "http_401"), (403, PermanentError, "http_403"),
        (404, PermanentError, "http_404"), (410, PermanentError, "http_410"), (451, PermanentError, "http_451"),
    ],
)
def test_status_mapping(status: int, error: type[Exception] | None, reason: str) -> None:
    resp = _response(status)
    if error is None:
        raise_for_status(resp, service="svc")
        return
    with pytest.raises(error) as info:
        raise_for_status(resp, service="svc", item_id="abc")
    assert type(info.value) is error
    assert error_reason(info.value) == reason
    assert "svc" in str(info.value) and "abc" in str(info.value)


def test_429_carries_retry_after_or_a_default() -> None:
    with pytest.raises(RateLimited) as info:
        raise_for_status(_response(429, {"Retry-After": "12"}), service="unsplash")
    assert info.value.retry_after_s == 12.0 and info.value.service == "unsplash"
    with pytest.raises(RateLimited) as info:
        raise_for_status(_response(429), service="unsplash", default_retry_after_s=33.0)
    assert info.value.retry_after_s == 33.0


def test_parse_retry_after_seconds_dates_and_garbage() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == pytest.approx(90.0)
    assert parse_retry_after(email.utils.formatdate(now - 90, usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now) is None


def test_errors_never_carry_secret_query_values() -> None:
    url = f"https://api.unsplash.com/photos?client_id={SECRET}&page=2"
    with pytest.raises(PermanentError) as info:
        raise_for_status(_response(401, url=url), service="unsplash")
    assert SECRET not in str(info.value)
    assert "page=2" in str(info.value)


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        (f"Authorization: Bearer {SECRET}", SECRET),
        (f"{{'Authorization': 'Client-ID {SECRET}'}}", SECRET),
        (f"header Client-ID {SECRET} sent", SECRET),
        (f"GET /x?access_token={SECRET}&a=1", SECRET),
        (f"GET /x?a=1&client_id={SECRET}", SECRET),
        ("token hf_abcdefghijklmnopqrstuvwxyz0123 in a log", "hf_abcdefghijklmnopqrstuvwxyz0123"),
    ],
)
def test_redact_masks_header_query_and_token_shapes(text: str, leak: str) -> None:
    out = redact(text, ())
    assert leak not in out
    assert "***" in out


def test_redact_masks_given_secrets_anywhere_and_keeps_the_rest() -> None:
    out = redact(f"the key {SECRET} failed; again {SECRET}", [SECRET, "", "ab"])
    assert out == "the key *** failed; again ***"
    assert redact("nothing secret, page=2", [SECRET]) == "nothing secret, page=2"


def test_client_sends_user_agent_and_follows_redirects(file_server) -> None:
    file_server.put("/real.txt", b"hello")
    url = file_server.redirect("/moved", "/real.txt")
    with make_client(timeout_s=5, headers={"X-Extra": "1"}) as client:
        resp = client.get(url)
    assert resp.status_code == 200 and resp.content == b"hello"
    last = file_server.requests[-1]
    assert last.path == "/real.txt"
    assert last.headers["User-Agent"] == f"sharp-dataset/{__version__}"
    assert last.headers["X-Extra"] == "1"


def test_client_timeout_is_a_transient_error(file_server) -> None:
    file_server.put("/slow", b"late")
    file_server.faults.delay(1.0)
    with make_client(timeout_s=0.1) as client:
        with pytest.raises(TransientError):
            call_with_retries(lambda: client.get(file_server.url("/slow")), attempts=1, base_s=0, max_s=0)
