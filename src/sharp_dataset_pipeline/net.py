"""HTTP plumbing shared by every client: session factory, the one retry helper, the status mapper.

Every outside HTTP call of the project goes through ``make_client`` and maps its response with
``raise_for_status``; every retry loop is ``call_with_retries``. Error messages built here never carry
secrets: URLs and header values pass through ``redact`` (``redact.py``, the project's one redactor) first.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import httpx

from . import __version__
from .errors import PermanentError, RateLimited, TransientError
from .redact import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")

USER_AGENT = f"sharp-dataset/{__version__}"
TRANSIENT_STATUSES = frozenset({408, 425})
DEFAULT_RETRY_AFTER_S = 60.0
def make_client(*, timeout_s: float = 30, headers: Mapping[str, str] | None = None) -> httpx.Client:
    """An ``httpx.Client`` that follows redirects and identifies itself as ``sharp-dataset/<version>``.

    Callers own the client and close it (``with make_client() as client: ...``).
    """
    merged = {"User-Agent": USER_AGENT}
    if headers:
        merged.update(headers)
    return httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=True, headers=merged)


def backoff_delays(attempts: int, base_s: float, max_s: float, rng: random.Random) -> list[float]:
    """Full-jitter exponential waits between ``attempts`` tries (``attempts - 1`` values).

    Wait ``i`` is uniform in ``[0, min(max_s, base_s * 2**i)]``: spreading the retries of many
    clients keeps a recovering server from being hit by all of them at once.
    """
    delays = []
    for i in range(max(attempts - 1, 0)):
        cap = min(max_s, base_s * (2.0**i))
        delays.append(rng.uniform(0.0, max(cap, 0.0)))
    return delays


def backoff_s(attempt: int, base_s: float, rng: random.Random, cap_s: float = 60.0) -> float:
    """A jittered, doubling wait that is never zero (attempt counts from 1), for loops that are not
    a blind repeat, such as the Hub commit loop: a retry storm must not hammer the server."""
    cap = min(cap_s, base_s * 2 ** (attempt - 1))
    return rng.uniform(cap / 2, cap)


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int,
    base_s: float,
    max_s: float,
    sleep: Callable[[float], object] = time.sleep,
    retry_on: tuple[type[BaseException], ...] = (TransientError,),
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """Call ``fn`` up to ``attempts`` times, waiting with full-jitter backoff between tries.

    Only for calls that are safe to repeat (reads, idempotent uploads): a write whose outcome may be
    unknown must be checked before it is sent again (the Hub commit loop does this, ``stores/hub_sync``).
    Only exceptions in ``retry_on`` are retried; anything else propagates at once, and the last
    failure propagates when the attempts run out. ``httpx`` transport errors (timeouts, resets,
    refused connections) raised by ``fn`` are turned into ``TransientError`` first, so they are
    retried exactly when ``TransientError`` is in ``retry_on``. ``RateLimited`` is retried only if
    the caller lists it, and then the wait is its ``retry_after_s`` (never shorter than the backoff).
    ``on_retry(attempt, error, delay_s)`` is called before each wait (``attempt`` counts from 1).
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    delays = backoff_delays(attempts, base_s, max_s, rng or random.Random())
    for attempt in range(1, attempts + 1):
        try:
            try:
                return fn()
            except httpx.TransportError as exc:
                raise transport_error(exc) from exc
        except retry_on as exc:
            if attempt >= attempts:
                raise
            delay = delays[attempt - 1]
            if isinstance(exc, RateLimited):
                delay = max(delay, exc.retry_after_s)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            logger.debug("attempt %d/%d failed (%s); retrying in %.2fs", attempt, attempts, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # the loop always returns or raises


def transport_error(exc: httpx.TransportError, *, service: str = "", item_id: str = "") -> TransientError:
    """A ``TransientError`` (reason ``timeout`` or ``network``) for an httpx transport failure."""
    reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "network"
    where = f"{service}: " if service else ""
    item = f" (item {item_id})" if item_id else ""
    err = TransientError(f"{where}{type(exc).__name__}: {redact(str(exc), ())}{item}")
    err.reason = reason  # type: ignore[attr-defined]  # TransientError has no reason field yet
    return err


def transient(message: str, reason: str) -> TransientError:
    """A ``TransientError`` carrying a stable ``reason`` code (like ``PermanentError.reason``)."""
    err = TransientError(message)
    err.reason = reason  # type: ignore[attr-defined]  # TransientError has no reason field yet
    return err


def error_reason(exc: BaseException) -> str:
    """The stable reason code of one of our errors (``transient`` / ``rate_limited`` when absent)."""
    reason = getattr(exc, "reason", "")
    if reason:
        return str(reason)
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, TransientError):
        return "transient"
    return "error"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date), or None if unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


def raise_for_status(
    resp: httpx.Response,
    *,
    service: str,
    item_id: str = "",
    default_retry_after_s: float = DEFAULT_RETRY_AFTER_S,
) -> None:
    """Map an HTTP status onto the project's errors; return quietly for 1xx-3xx.

    408, 425 and 5xx are ``TransientError``; 429 is ``RateLimited`` (``Retry-After`` parsed, else
    ``default_retry_after_s``); 404, 410 and every other 4xx are ``PermanentError``. Reasons are
    ``http_<status>``. Messages name the service, method, redacted URL and request id, never a body.
    """
    status = resp.status_code
    if status < 400:
        return
    reason = f"http_{status}"
    message = _status_message(resp, service, item_id)
    if status == 429:
        wait = parse_retry_after(resp.headers.get("Retry-After"), time.time())
        err = RateLimited(message, default_retry_after_s if wait is None else wait, service=service)
        err.reason = reason  # type: ignore[attr-defined]
        raise err
    if status in TRANSIENT_STATUSES or status >= 500:
        raise transient(message, reason)
    raise PermanentError(message, reason=reason)


def _status_message(resp: httpx.Response, service: str, item_id: str) -> str:
    try:
        request = resp.request
        target = f"{request.method} {redact(str(request.url), ())}"
    except RuntimeError:  # a Response built without a request
        target = "request"
    parts = [f"{service}: HTTP {resp.status_code} for {target}"]
    request_id = resp.headers.get("X-Request-Id") or resp.headers.get("X-Amzn-Trace-Id")
    if request_id:
        parts.append(f"request id {redact(request_id, ())}")
    if item_id:
        parts.append(f"item {item_id}")
    return ", ".join(parts)

