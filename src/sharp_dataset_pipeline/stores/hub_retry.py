"""How the Hub store reads a failed commit (reference §6.3). No I/O: exceptions and headers in,
a decision out.

| answer | outcome | what the store does |
| --- | --- | --- |
| 412 | ``conflict`` | the head moved: re-read, decide again, rebuild the operations |
| 409 | ``busy`` | another commit was being applied; nothing of ours was: wait, resend the intent |
| 429 | ``rate`` | the commit quota: pause all commits for the advertised time, then resend |
| 5xx, 408, timeout, lost connection | ``unknown`` | it may have landed: read the head before anything else |
| any other status, a rejected operation | ``StoreError`` | nothing was published; the caller decides |
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from .. import net
from ..errors import StoreError

CONFLICT, BUSY, RATE, UNKNOWN = "conflict", "busy", "rate", "unknown"
_ABOUT_RE = re.compile(r"in about (\d+) (second|minute|hour)", re.IGNORECASE)
_RATELIMIT_T = re.compile(r"\bt=(\d+)")
_UNITS = {"second": 1, "minute": 60, "hour": 3600}


def retry_after_s(headers: Mapping[str, str], message: str, now: float, hits: int) -> float:
    """The wait a quota refusal asks for: ``Retry-After``, else the ``RateLimit`` header's ``t=``,
    else the message ("retry ... in about 1 hour"), else a doubling guess from one minute."""
    wait = net.parse_retry_after(headers.get("Retry-After"), now)
    if wait is None:
        match = _RATELIMIT_T.search(headers.get("RateLimit", "") or "")
        wait = float(match.group(1)) if match else None
    if wait is None:
        match = _ABOUT_RE.search(message or "")
        if match:
            wait = float(int(match.group(1)) * _UNITS[match.group(2).lower()])
    if wait is None:
        wait = min(3600.0, 60.0 * 2 ** min(hits, 6))
    return max(1.0, float(wait))


def classify(exc: BaseException, now: float, rate_hits: int) -> tuple[str, float]:
    """``(outcome, wait_s)`` for a failed ``create_commit``; raises ``StoreError`` when fatal and
    re-raises what is not a Hub or transport failure (a bug should not look like a network error)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        message = exc.server_message or ""
        if status == 412:
            return CONFLICT, 0.0
        if status == 409:
            return BUSY, 0.0
        if status == 429:
            return RATE, retry_after_s(exc.response.headers, message, now, rate_hits)
        if status >= 500 or status == 408:
            # A quota refusal sometimes arrives wrapped in a 500: wait as told, outcome still unknown.
            if "rate limit" in message.lower():
                return UNKNOWN, retry_after_s(exc.response.headers, message, now, rate_hits)
            return UNKNOWN, 0.0
        raise StoreError(f"the hub refused the commit with {status}: {message}".strip()) from None
    if isinstance(exc, (httpx2.TransportError, TimeoutError, ConnectionError)):
        return UNKNOWN, 0.0
    if isinstance(exc, ValueError):  # the client rejected the operations before sending anything
        raise StoreError(f"the commit was rejected before sending: {exc}") from None
    raise exc


def backoff_s(attempt: int, base_s: float, rng: random.Random, cap_s: float = 60.0) -> float:
    """A jittered, doubling wait that is never zero: a retry storm must not hammer the Hub."""
    cap = min(cap_s, base_s * 2 ** (attempt - 1))
    return rng.uniform(cap / 2, cap)

