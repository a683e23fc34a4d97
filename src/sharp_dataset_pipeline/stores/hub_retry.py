"""The Hub wire's one status → error mapper (reference §6.3). No I/O: exceptions and headers in,
a decision out. Reads and commits share ``answer_of``; they differ only in what an outcome means.

| answer | outcome | a commit (``classify``) | a read (``read_error``) |
| --- | --- | --- | --- |
| 412 | ``conflict`` | the head moved: re-read, decide again, rebuild the operations | ``StoreError`` |
| 409 | ``busy`` | another commit was being applied, none of ours: wait, resend the intent | ``StoreError`` |
| 429 | ``rate`` | the commit quota: pause all commits for the advertised time, then resend | ``RateLimited`` |
| 5xx, 408, timeout, lost link | ``unknown`` | it may have landed: read the head first | ``TransientError`` |
| repo not found | ``missing`` | ``StoreError`` | ``StoreError`` (re-raised as is if expected) |
| other 404 | ``gone`` | a path it deletes is gone (checked before the parent?): re-read, rebuild | ``StoreError`` |
| any other status | ``refused`` | ``StoreError``: nothing was published; the caller decides | ``StoreError`` |

Only reads are repeated blindly (through ``net.call_with_retries``); a commit whose outcome is
unknown is never re-sent before the head has been read (``HubSync.run``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .. import net
from ..errors import RateLimited, StoreError, TransientError

CONFLICT, BUSY, RATE, UNKNOWN, MISSING, REFUSED = "conflict", "busy", "rate", "unknown", "missing", "refused"
GONE = "gone"
_ABOUT_RE = re.compile(r"in about (\d+) (second|minute|hour)", re.IGNORECASE)
_RATELIMIT_T = re.compile(r"\bt=(\d+)")
_UNITS = {"second": 1, "minute": 60, "hour": 3600}

backoff_s = net.backoff_s  # the commit loop's waits come from the one retry module too


@dataclass(frozen=True)
class HubAnswer:
    """What one failed Hub call answered, in the mapper's words."""

    outcome: str
    status: int = 0  # 0: no HTTP answer (timeout, lost connection)
    message: str = ""  # the server's message
    wait_s: float = 0.0


def failure_types() -> tuple[type[BaseException], ...]:
    """The exceptions ``answer_of`` understands (anything else is a bug and must propagate)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    return (HfHubHTTPError, LocalEntryNotFoundError, httpx2.TransportError, TimeoutError, ConnectionError)


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


def answer_of(exc: BaseException, now: float, rate_hits: int) -> HubAnswer | None:
    """The outcome of a failed Hub call, or None when ``exc`` is not a Hub or transport failure."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(exc, LocalEntryNotFoundError):
        # hf_hub_download's answer when its metadata request failed (5xx, 429, lost link) and the file
        # is not cached: the failure that caused it says what happened; without one it is an outage.
        cause = exc.__cause__
        found = answer_of(cause, now, rate_hits) if isinstance(cause, BaseException) else None
        return found or HubAnswer(UNKNOWN)
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        message = exc.server_message or ""
        if isinstance(exc, RepositoryNotFoundError):
            return HubAnswer(MISSING, status, message)
        if status == 412:
            return HubAnswer(CONFLICT, status, message)
        if status == 404:
            return HubAnswer(GONE, status, message)
        if status == 409:
            return HubAnswer(BUSY, status, message)
        if status == 429:
            return HubAnswer(RATE, status, message, retry_after_s(exc.response.headers, message, now, rate_hits))
        if status >= 500 or status == 408:
            # A quota refusal sometimes arrives wrapped in a 500: wait as told, outcome still unknown.
            quota = "rate limit" in message.lower()
            wait = retry_after_s(exc.response.headers, message, now, rate_hits) if quota else 0.0
            return HubAnswer(UNKNOWN, status, message, wait)
        return HubAnswer(REFUSED, status, message)
    if isinstance(exc, (HfHubHTTPError, httpx2.TransportError, TimeoutError, ConnectionError)):
        return HubAnswer(UNKNOWN)
    return None


def classify(exc: BaseException, now: float, rate_hits: int) -> tuple[str, float]:
    """``(outcome, wait_s)`` for a failed ``create_commit``; raises ``StoreError`` when fatal and
    re-raises what is not a Hub or transport failure (a bug should not look like a network error)."""
    answer = answer_of(exc, now, rate_hits)
    if answer is None:
        if isinstance(exc, ValueError):  # the client rejected the operations before sending anything
            raise StoreError(f"the commit was rejected before sending: {exc}") from None
        raise exc
    if answer.outcome in (MISSING, REFUSED):
        text = f"the hub refused the commit with {answer.status}: {answer.message}".strip().rstrip(":")
        raise StoreError(text + auth_hint(answer.status, "write to")) from None
    return answer.outcome, answer.wait_s


def auth_hint(status: int, access: str) -> str:
    """What to check when the Hub answers 401 or 403 (the token is the usual cause), else ``''``."""
    if status == 401:
        return f" (is HF_TOKEN set to a valid token that may {access} the repo?)"
    if status == 403:
        return f" (HF_TOKEN may not {access} this repo: a read-only or fine-grained token without it?)"
    return ""


def read_error(exc: BaseException, what: str, repo_id: str, now: float) -> BaseException:
    """The error a failed read raises: ``TransientError`` / ``RateLimited`` (worth repeating) or
    ``StoreError``; ``exc`` itself when it is not a Hub failure. ``what`` names the read."""
    answer = answer_of(exc, now, 1)
    if answer is None:
        return exc
    if answer.outcome == MISSING:
        return StoreError(f"repo {repo_id} not found (or the token may not read it)")
    if answer.outcome == RATE:
        return RateLimited(f"hub {answer.status}", answer.wait_s, "hub")
    if answer.outcome == UNKNOWN:
        return TransientError(f"{what}: {answer.status or type(exc).__name__}")
    return StoreError(f"hub refused {what} with {answer.status}{auth_hint(answer.status, 'read')}")
