"""Download one URL to a file: streamed to a temp file next to it, checked, then renamed into place.

A reader never sees a half-written file at ``dest``: the bytes land in a hidden temp file in the same
folder and are moved with ``os.replace`` only when complete. Failed attempts leave nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from ..errors import PermanentError, TransientError
from ..net import call_with_retries, raise_for_status, transient, transport_error
from ..redact import redact

logger = logging.getLogger(__name__)



def download(
    url: str,
    dest: Path,
    client: httpx.Client,
    *,
    max_bytes: int,
    attempts: int = 4,
    base_s: float = 0.5,
    max_s: float = 30.0,
    service: str = "download",
    item_id: str = "",
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    deadline_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, str]:
    """Fetch ``url`` into ``dest`` and return ``(size, sha256 hex)`` of the bytes written.

    Retries transient failures (timeouts, 5xx, a body shorter than its Content-Length, reason
    ``truncated_download``) with backoff. Raises ``PermanentError`` for 4xx (``http_<status>``) or a
    body over ``max_bytes`` (``too_large``), ``RateLimited`` for 429, and ``TransientError`` once the
    attempts run out.

    ``deadline_s`` bounds the whole download, retries included: a server that trickles bytes slowly
    enough never trips the read timeout, so the body is cut off at the deadline (a ``TransientError``
    with reason ``download_deadline``; later runs may try again) and no further attempt starts.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    deadline = clock() + deadline_s if deadline_s else None
    timed_out: list[TransientError] = []

    def attempt() -> tuple[int, str]:
        try:
            return _download_once(url, dest, client, max_bytes=max_bytes, service=service, item_id=item_id,
                                  deadline=deadline, clock=clock)
        except TransientError as exc:
            if deadline is not None and clock() >= deadline:
                timed_out.append(exc)
                raise _OutOfTime() from exc
            raise

    def log_retry(n: int, exc: BaseException, delay: float) -> None:
        logger.info("download of item %s failed (attempt %d): %s; retrying in %.1fs", item_id, n, exc, delay)
        if deadline is not None and clock() + delay >= deadline:
            raise _OutOfTime() from exc  # the wait alone would pass the deadline: give up now

    try:
        return call_with_retries(
            attempt, attempts=attempts, base_s=base_s, max_s=max_s, sleep=sleep, on_retry=log_retry, rng=rng
        )
    except _OutOfTime as stop:
        cause = timed_out[-1] if timed_out else stop.__cause__
        raise transient(f"{service}: item {item_id}: no complete download within FETCH_TIMEOUT_SECS="
                        f"{deadline_s:g}s (last: {cause})", "download_deadline") from cause


class _OutOfTime(Exception):
    """The download's deadline passed: not a ``TransientError``, so the retry loop does not go on."""


def _download_once(
    url: str, dest: Path, client: httpx.Client, *, max_bytes: int, service: str, item_id: str,
    deadline: float | None = None, clock: Callable[[], float] = time.monotonic,
) -> tuple[int, str]:
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with client.stream("GET", url) as resp:
            raise_for_status(resp, service=service, item_id=item_id)
            declared = _content_length(resp)
            if declared is not None and declared > max_bytes:
                raise PermanentError(
                    f"{service}: item {item_id} is {declared} bytes, over the {max_bytes}-byte limit",
                    reason="too_large",
                )
            size, digest = _stream_to(resp, tmp, max_bytes=max_bytes, service=service, item_id=item_id,
                                      deadline=deadline, clock=clock)
            # Compare raw (on-the-wire) bytes: Content-Length counts them, not the decoded ones.
            if declared is not None and resp.num_bytes_downloaded < declared:
                raise transient(
                    f"{service}: item {item_id} body ended after {resp.num_bytes_downloaded} of "
                    f"{declared} bytes",
                    "truncated_download",
                )
        os.replace(tmp, dest)
        return size, digest
    except httpx.RemoteProtocolError as exc:
        # h11 raises this when the peer closes before the announced body length arrived.
        raise transient(
            f"{service}: item {item_id} download cut short: {redact(str(exc), ())}", "truncated_download"
        ) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # No retry can fix the URL itself (no host, a bad port, a redirect to another scheme).
        raise PermanentError(f"{service}: item {item_id} has an unusable URL: {redact(str(exc), ())}",
                             reason="bad_url") from exc
    except httpx.TransportError as exc:
        raise transport_error(exc, service=service, item_id=item_id) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _stream_to(
    resp: httpx.Response, tmp: Path, *, max_bytes: int, service: str, item_id: str,
    deadline: float | None, clock: Callable[[], float],
) -> tuple[int, str]:
    hasher = hashlib.sha256()
    size = 0
    with open(tmp, "wb") as fh:
        # No chunk size: each network read is seen at once, so a trickle meets the deadline check.
        for chunk in resp.iter_bytes():
            if deadline is not None and clock() >= deadline:
                raise transient(f"{service}: item {item_id}: still downloading at the deadline, "
                                f"{size} bytes in", "download_deadline")
            size += len(chunk)
            if size > max_bytes:
                raise PermanentError(
                    f"{service}: item {item_id} is over the {max_bytes}-byte limit", reason="too_large"
                )
            hasher.update(chunk)
            fh.write(chunk)
    return size, hasher.hexdigest()


def _content_length(resp: httpx.Response) -> int | None:
    value = resp.headers.get("Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None

