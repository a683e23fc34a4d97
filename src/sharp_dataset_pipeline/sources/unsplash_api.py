"""The Unsplash API client: authenticated GETs, paced by the quota governor, statuses mapped once.

Every API call goes through ``UnsplashApi.get``: it asks the governor first, sends
``Authorization: Client-ID …`` and ``Accept-Version: v1`` on that request only (the shared HTTP
client also fetches image bytes from the CDN, which must never see the key), retries 5xx and
timeouts with backoff, and maps the answer:

- 429, 403 whose body says "rate limit" (plain text or JSON), or ``X-Ratelimit-Remaining: 0`` on
  an error: ``RateLimited`` (``retry_after_s`` = until the window reopens);
- 401, or 403 that is not a rate limit: ``ConfigError`` (the key is wrong, revoked or blocked);
- 404 / 410: ``PermanentError`` (reasons ``not_found`` / ``gone``); other 4xx: ``PermanentError``;
- 5xx and transport errors: ``TransientError`` once the retries are spent.

The access key never appears in a message: everything shown passes through ``redact.redact``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import ConfigError, PermanentError, RateLimited, TransientError
from ..net import call_with_retries, parse_retry_after, raise_for_status, transient
from ..redact import redact
from .unsplash_quota import ORDINARY, TRACK, UnsplashQuota

logger = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.unsplash.com"
SERVICE = "unsplash"
_RATE_LIMIT_WORDS = ("rate limit", "ratelimit", "rate-limit")
_WAIT_SLICE_S = 5.0


@dataclass(frozen=True)
class ApiResponse:
    """A decoded JSON answer and the paging headers that came with it."""

    data: Any
    total: int | None
    per_page: int | None
    link: str


def is_rate_limit_response(status: int, body: str, remaining: int | None) -> bool:
    """The three signals of a reached limit (429; 403 saying so; remaining 0 on an error)."""
    if status == 429:
        return True
    if status >= 400 and remaining == 0:
        return True
    return status == 403 and any(word in body.lower() for word in _RATE_LIMIT_WORDS)


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class UnsplashApi:
    """Authenticated, governed GETs against the Unsplash API (see module doc)."""

    def __init__(
        self,
        *,
        access_key: str,
        api_base: str = DEFAULT_API_BASE,
        app_name: str = "",
        governor: UnsplashQuota,
        client: httpx.Client,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
        stop_on_rate_limit: bool = True,
        stop_requested: Callable[[], bool] | None = None,
        attempts: int = 4,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if not access_key:
            raise ConfigError("UNSPLASH_ACCESS_KEY: required for Unsplash sources")
        base = urlsplit(api_base)
        if base.scheme not in ("http", "https") or not base.netloc:
            raise ConfigError(f"UNSPLASH_API_BASE: {api_base!r} is not an http(s) URL")
        self.api_base = api_base.rstrip("/")
        self.governor, self.client, self.clock, self.sleep = governor, client, clock, sleep
        self.stop_on_rate_limit = stop_on_rate_limit
        self.stop_requested = stop_requested or (lambda: False)
        self.before_wait: Callable[[], None] = lambda: None
        self.attempts, self.backoff_base_s, self.backoff_max_s = attempts, backoff_base_s, backoff_max_s
        self.rng = rng or random.Random()
        self._key = access_key
        self._headers = {"Authorization": f"Client-ID {access_key}", "Accept-Version": "v1"}
        if app_name:
            self._headers["User-Agent"] = f"{app_name} (sharp-dataset)"

    def url(self, path: str) -> str:
        """An absolute API URL for ``path`` (absolute URLs are returned as they are)."""
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.api_base}/{path.lstrip('/')}"

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` points at the configured API (the only place the key may go)."""
        a, b = urlsplit(url), urlsplit(self.api_base)
        return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())

    def get(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        kind: str = ORDINARY,
        item_id: str = "",
        wait: bool | None = None,
    ) -> ApiResponse:
        """GET ``path`` and decode its JSON. ``wait`` overrides ``stop_on_rate_limit`` for this call
        (tracking calls pass ``wait=False``: they run off the publish path and must never block it).
        """
        may_wait = (not self.stop_on_rate_limit) if wait is None else wait
        while True:
            try:
                return call_with_retries(
                    lambda: self._attempt(path, params, kind, item_id),
                    attempts=self.attempts, base_s=self.backoff_base_s, max_s=self.backoff_max_s,
                    sleep=self.sleep, retry_on=(TransientError,), on_retry=self._log_retry, rng=self.rng,
                )
            except RateLimited as exc:
                if not may_wait or self.stop_requested():
                    raise
                self.wait_for_window(exc.retry_after_s)

    def wait_for_window(self, seconds: float) -> None:
        """Sleep until the window reopens, in slices, giving up early when a stop is requested."""
        logger.info("Unsplash API budget spent; waiting %.0f s for the hourly window to reopen", seconds)
        end = self.clock() + seconds
        self.before_wait()
        while not self.stop_requested():
            left = end - self.clock()
            if left <= 0:
                return
            self.sleep(min(left, _WAIT_SLICE_S))
        left = max(0.0, end - self.clock())
        raise RateLimited("stopped while waiting for the Unsplash rate limit window", left, service=SERVICE)

    def pace(self, decision_wait_s: float) -> None:
        """Sleep a pacing wait (never a limit)."""
        if decision_wait_s > 0:
            self.sleep(decision_wait_s)

    # ---- one attempt -------------------------------------------------------------------
    def _attempt(self, path: str, params: dict[str, Any] | None, kind: str, item_id: str) -> ApiResponse:
        self._admit(kind)
        try:
            resp = self.client.get(self.url(path), params=params, headers=self._headers)
        except httpx.TransportError:
            self.governor.record_no_answer()
            raise
        return self._handle(resp, item_id)

    def _admit(self, kind: str) -> None:
        while True:
            decision = self.governor.request(kind, self.clock())
            if decision.granted:
                return
            if decision.exhausted:
                raise RateLimited(
                    f"{SERVICE}: hourly API budget spent (kept for download tracking)"
                    if kind != TRACK else f"{SERVICE}: hourly API limit reached",
                    decision.wait_s, service=SERVICE,
                )
            self.pace(decision.wait_s)

    def _handle(self, resp: httpx.Response, item_id: str) -> ApiResponse:
        limit = _int_header(resp.headers, "X-Ratelimit-Limit")
        remaining = _int_header(resp.headers, "X-Ratelimit-Remaining")
        now = self.clock()
        status = resp.status_code
        if status >= 400:
            body = resp.text[:500]
            if is_rate_limit_response(status, body, remaining):
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), now)
                self.governor.record(now, limit=limit, remaining=remaining, rate_limited=True,
                                     retry_after_s=retry_after)
                wait = (self.governor.reopens_at(now) or now) - now
                raise RateLimited(f"{SERVICE}: rate limit reached (HTTP {status})", wait, service=SERVICE)
            self.governor.record(now, limit=limit, remaining=remaining)
            self._raise_for_error(resp, body, item_id)
        self.governor.record(now, limit=limit, remaining=remaining)
        try:
            data = resp.json()
        except ValueError as exc:
            raise transient(f"{SERVICE}: HTTP {status} with a body that is not JSON", "bad_json") from exc
        return ApiResponse(
            data=data,
            total=_int_header(resp.headers, "X-Total"),
            per_page=_int_header(resp.headers, "X-Per-Page"),
            link=resp.headers.get("Link", ""),
        )

    def _raise_for_error(self, resp: httpx.Response, body: str, item_id: str) -> None:
        status = resp.status_code
        said = redact(" ".join(body.split())[:200], [self._key])
        if status in (401, 403):
            hint = (
                "the access key was rejected" if status == 401 else
                "the request was refused and it is not a rate limit (invalid or revoked key, or blocked IP)"
            )
            raise ConfigError(
                f"UNSPLASH_ACCESS_KEY: Unsplash answered HTTP {status}: {hint}. "
                f"Check the key of your Unsplash application. Server said: {said or '(nothing)'}"
            )
        what = f"{SERVICE}: HTTP {status}" + (f" for photo {item_id}" if item_id else "")
        if status == 404:
            raise PermanentError(f"{what} (not found)", reason="not_found")
        if status == 410:
            raise PermanentError(f"{what} (gone: {said})", reason="gone")
        # The key travels in a header only, so the URL in this message cannot carry it.
        raise_for_status(resp, service=SERVICE, item_id=item_id)

    def _log_retry(self, attempt: int, exc: BaseException, delay: float) -> None:
        logger.info("Unsplash call failed (attempt %d): %s; retrying in %.1f s",
                    attempt, redact(str(exc), [self._key]), delay)
