"""The gsplat.org ("GSplat Share") client: optional sharing of a splat (``share --missing`` is in ``share``).

gsplat.org has no documented API. This client speaks the tRPC procedures its web front end uses
(the same calls the predecessor made): every call is ``POST <base>/share/trpc/<procedure>?batch=1``
with the JSON body ``{"0": <input>}``, no authentication. A file under ``direct_max_bytes`` goes up
in one ``order.uploadGaussianSplat`` call; a larger one through ``order.chunkedUploadInitiate``,
``order.chunkedUploadChunk`` (base64 pieces) and ``order.chunkedUploadFinalize``. Then
``order.createOrder`` turns the uploaded model file into a share whose viewer page is
``<base>/viewer/<shareId>``. Links expire (``expiration_type``, ``1week`` by default).

Safety: ``GSPLAT_BASE`` must be https on gsplat.org or one of its subdomains; IP literals in
private, loopback, link-local or reserved ranges and ``localhost`` are refused, and redirects are
not followed (only ``allow_private_base``, for the test emulator, lifts these rules). The HTTP client
carries no credentials: none of the user's Hugging Face or Unsplash tokens is ever sent.

Failures: 408 / 425 / 5xx, timeouts, malformed JSON and a reply without ``shareId`` are retried with
jittered backoff (``net.call_with_retries``), 429 after its ``Retry-After``; everything shares one
deadline (``total_timeout_s``). A share that still fails raises; callers in the pipeline use
:func:`try_share`, which logs and returns ``None`` so the item is published without share fields,
and ``sharp-dataset share --missing`` (``share.share_missing``) shares those later.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import ConfigError, PermanentError, RateLimited, SharpDatasetError, TransientError
from ..net import call_with_retries, error_reason, make_client, raise_for_status, transient
from ..redact import redact

logger = logging.getLogger(__name__)

SERVICE = "gsplat"
DEFAULT_BASE = "https://gsplat.org"
ALLOWED_HOSTS = ("gsplat.org",)
DIRECT_MAX_BYTES = 20 * 1024 * 1024  # the front end's switch to chunked uploads
CHUNK_BYTES = 16 * 1024 * 1024  # base64 in JSON adds a third: ~22 MB per request
_FILE_TYPES = {".ply": "ply", ".spz": "spz", ".splat": "splat"}
_SHARE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_URL_KEYS = ("modelFileUrl", "fileUrl", "url")
_MAX_DEPTH = 6
SHARE_FIELDS = ("gsplat_url", "gsplat_share_id", "gsplat_model_id")


@dataclass(frozen=True)
class ShareOptions:
    """Where and how to share. ``allow_private_base`` exists for the loopback test emulator only."""

    base: str = DEFAULT_BASE
    expiration_type: str = "1week"
    direct_max_bytes: int = DIRECT_MAX_BYTES
    chunk_bytes: int = CHUNK_BYTES
    attempts: int = 4
    backoff_base_s: float = 2.0
    backoff_max_s: float = 30.0
    request_timeout_s: float = 120.0
    total_timeout_s: float = 1800.0
    allow_private_base: bool = False


@dataclass(frozen=True)
class ShareResult:
    """A created share: the viewer ``url``, its ``share_id``, the uploaded model file's id, the order id."""

    url: str
    share_id: str
    model_id: str
    order_id: str = ""


def share_fields(result: ShareResult) -> dict[str, str]:
    """The index row fields recording a share."""
    return {"gsplat_url": result.url, "gsplat_share_id": result.share_id, "gsplat_model_id": result.model_id}


def _is_private_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return bool(ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
                or ip.is_multicast or ip.is_unspecified)


def check_base(base: str, *, allow_private: bool = False) -> str:
    """Validate ``GSPLAT_BASE``; return it without a trailing slash or raise ``ConfigError``.

    Allowed: ``https://gsplat.org`` or a subdomain, no user, password, query or fragment. With
    ``allow_private`` (tests only) any http(s) host is accepted, loopback included.
    """
    try:
        parts = urlsplit(base.strip())
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018  # raises ValueError for a malformed port
    except ValueError as exc:
        raise ConfigError(f"GSPLAT_BASE {redact(base, ())!r} is not a URL: {exc}") from exc
    if parts.username or parts.password or parts.query or parts.fragment or not host:
        raise ConfigError("GSPLAT_BASE must be a plain https://host[/path] URL (no credentials, query or fragment)")
    if allow_private:
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"GSPLAT_BASE must be http(s), got {parts.scheme!r}")
        return base.strip().rstrip("/")
    if parts.scheme != "https":
        raise ConfigError(f"GSPLAT_BASE must use https, got {parts.scheme!r}")
    if _is_private_host(host) or not any(host == h or host.endswith("." + h) for h in ALLOWED_HOSTS):
        raise ConfigError(f"GSPLAT_BASE host {host!r} is not allowed (only {', '.join(ALLOWED_HOSTS)} and subdomains)")
    return base.strip().rstrip("/")


def _find_url(value: Any, depth: int = 0) -> str:
    """The model file URL in a reply: a bare string, or the first URL key found (breadth-first)."""
    if isinstance(value, str):
        return value
    if depth >= _MAX_DEPTH or not isinstance(value, (dict, list)):
        return ""
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, dict):
        for key in _URL_KEYS:
            if isinstance(value.get(key), str) and value[key]:
                return value[key]
    for child in items:
        if isinstance(child, (dict, list)):
            found = _find_url(child, depth + 1)
            if found:
                return found
    return ""


def _model_id(model_url: str) -> str:
    """The last path segment of the model file URL (``/share/file/<token>.ply`` → ``<token>.ply``)."""
    return urlsplit(model_url).path.rstrip("/").rsplit("/", 1)[-1] or model_url


def _trpc_message(body: Any) -> str:
    entry = body[0] if isinstance(body, list) and body else body
    if not isinstance(entry, dict) or "error" not in entry:
        return ""
    err = entry["error"]
    err = err.get("json", err) if isinstance(err, dict) else err
    message = err.get("message", "") if isinstance(err, dict) else str(err)
    return redact(str(message), ())[:200]


def _trpc_status(body: Any) -> int:
    entry = body[0] if isinstance(body, list) and body else body
    try:
        err = entry["error"]
        err = err.get("json", err)
        return int(err["data"]["httpStatus"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return 0


class GsplatClient:
    """A gsplat.org share client; ``with GsplatClient(opts) as c: c.share_file(path, title=item_id)``."""

    def __init__(
        self,
        opts: ShareOptions,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.opts = opts
        self.base = check_base(opts.base, allow_private=opts.allow_private_base)
        if opts.chunk_bytes < 1 or opts.direct_max_bytes < 0 or opts.attempts < 1:
            raise ConfigError("chunk_bytes >= 1, direct_max_bytes >= 0 and attempts >= 1 are required")
        self._http = http or make_client(timeout_s=opts.request_timeout_s)
        self._owns_http = http is None
        self._clock, self._sleep, self._rng = clock, sleep, rng or random.Random()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> GsplatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one procedure call ----------------------------------------------------------------------

    def _remaining(self, deadline: float, what: str) -> float:
        left = deadline - self._clock()
        if left <= 0:
            raise transient(f"{SERVICE}: gave up on {what}: the share took longer than "
                            f"{self.opts.total_timeout_s:g} s", "gsplat_deadline")
        return left

    def _post_once(self, procedure: str, payload: dict[str, Any], deadline: float) -> Any:
        timeout = min(self.opts.request_timeout_s, self._remaining(deadline, procedure))
        url = f"{self.base}/share/trpc/{procedure}?batch=1"
        resp = self._http.post(url, json={"0": payload}, timeout=timeout, follow_redirects=False)
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            try:
                raise_for_status(resp, service=SERVICE)
            except (TransientError, PermanentError, RateLimited) as exc:
                detail = _trpc_message(body)
                if detail:
                    exc.args = (f"{exc.args[0]}: {detail}",)
                raise
        if 300 <= resp.status_code < 400:
            raise PermanentError(f"{SERVICE}: {procedure} answered a redirect ({resp.status_code}); "
                                 "redirects are not followed", reason="gsplat_redirect")
        if body is None:
            raise transient(f"{SERVICE}: {procedure} answered HTTP {resp.status_code} with malformed JSON",
                            "gsplat_bad_json")
        return self._unwrap(procedure, body)

    def _unwrap(self, procedure: str, body: Any) -> Any:
        entry = body[0] if isinstance(body, list) and body else body
        if isinstance(entry, dict) and "error" in entry:
            status = _trpc_status(body)
            message = f"{SERVICE}: {procedure} failed: {_trpc_message(body) or 'error without message'}"
            if status in (408, 425, 429) or status >= 500:
                raise transient(message, f"http_{status}")
            raise PermanentError(message, reason="gsplat_error")
        try:
            data = entry["result"]["data"]
        except (KeyError, TypeError) as exc:
            raise transient(f"{SERVICE}: {procedure} answered without result.data", "gsplat_bad_json") from exc
        return data["json"] if isinstance(data, dict) and "json" in data else data

    def _call(self, procedure: str, payload: dict[str, Any], deadline: float,
              check: Callable[[Any], Any] | None = None) -> Any:
        """One procedure with retries; ``check`` turns the reply into the value needed (raising
        ``TransientError`` to have an incomplete reply retried)."""

        def once() -> Any:
            data = self._post_once(procedure, payload, deadline)
            return check(data) if check is not None else data

        def before_wait(attempt: int, exc: BaseException, delay: float) -> None:
            if self._clock() + delay >= deadline:
                raise transient(f"{SERVICE}: {procedure}: no time left to retry after: {exc}", "gsplat_deadline")
            logger.info("%s: %s attempt %d failed (%s); retrying in %.1f s", SERVICE, procedure, attempt,
                        error_reason(exc), delay)

        return call_with_retries(
            once, attempts=self.opts.attempts, base_s=self.opts.backoff_base_s, max_s=self.opts.backoff_max_s,
            sleep=self._sleep, retry_on=(TransientError, RateLimited), on_retry=before_wait, rng=self._rng,
        )

    # -- the flow ------------------------------------------------------------------------------------

    def share_file(self, path: Path, *, title: str, description: str = "") -> ShareResult:
        """Upload ``path`` (.ply, .spz or .splat) and create a share; return its viewer URL and ids."""
        path = Path(path)
        kind = _FILE_TYPES.get(path.suffix.lower())
        if kind is None:
            raise PermanentError(f"{SERVICE} takes .ply, .spz or .splat files, not {path.name}",
                                 reason="gsplat_unsupported_type")
        size = path.stat().st_size
        deadline = self._clock() + self.opts.total_timeout_s
        meta = {"title": title, "description": description, "expirationType": self.opts.expiration_type}
        if size < self.opts.direct_max_bytes:
            model_url = self._upload_direct(path, kind, size, deadline)
        else:
            model_url = self._upload_chunked(path, size, meta, deadline)
        order = self._call("order.createOrder", {"modelFileUrl": model_url, **meta}, deadline, check=_order_ids)
        share_id, order_id = order
        result = ShareResult(url=f"{self.base}/viewer/{share_id}", share_id=share_id,
                             model_id=_model_id(model_url), order_id=order_id)
        logger.info("shared %s (%d bytes) as %s", path.name, size, result.url)
        return result

    def _upload_direct(self, path: Path, kind: str, size: int, deadline: float) -> str:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        payload = {"gaussianSplatFile": {"name": path.name, "data": data, "type": kind, "size": size}}
        return self._call("order.uploadGaussianSplat", payload, deadline, check=_model_url)

    def _upload_chunked(self, path: Path, size: int, meta: dict[str, str], deadline: float) -> str:
        chunk = self.opts.chunk_bytes
        total = max(1, math.ceil(size / chunk))
        start = {"filename": path.name, "fileSize": size, "chunkSize": chunk, "contentType": "", "metadata": meta}
        upload_id = self._call("order.chunkedUploadInitiate", start, deadline, check=_upload_id)
        with open(path, "rb") as f:
            for index in range(total):
                piece = f.read(chunk)
                self._call("order.chunkedUploadChunk", {
                    "uploadId": upload_id, "chunkIndex": index, "totalChunks": total,
                    "data": base64.b64encode(piece).decode("ascii"), "size": len(piece),
                }, deadline)
        finish = {"uploadId": upload_id, "totalChunks": total, "filename": path.name, "metadata": meta}
        return self._call("order.chunkedUploadFinalize", finish, deadline, check=_model_url)


def _model_url(data: Any) -> str:
    url = _find_url(data)
    if not url:
        raise transient(f"{SERVICE}: the upload reply names no model file URL", "gsplat_no_model_url")
    return url


def _upload_id(data: Any) -> str:
    value = data
    if isinstance(data, dict):
        value = data.get("uploadId") or data.get("id")
    if not isinstance(value, str) or not value:
        raise transient(f"{SERVICE}: chunked upload initiate returned no uploadId", "gsplat_no_upload_id")
    return value


def _order_ids(data: Any) -> tuple[str, str]:
    share_id = data.get("shareId") if isinstance(data, dict) else None
    if not isinstance(share_id, str) or not _SHARE_ID.match(share_id):
        raise transient(f"{SERVICE}: createOrder returned no usable shareId", "gsplat_no_share_id")
    order_id = data.get("id", "")
    return share_id, str(order_id) if order_id is not None else ""


def try_share(client: GsplatClient, path: Path, *, title: str) -> ShareResult | None:
    """Share ``path``; on failure log the reason and return ``None`` (a share never fails an item)."""
    try:
        return client.share_file(path, title=title)
    except (SharpDatasetError, OSError) as exc:
        logger.warning("gsplat share of %s failed (%s): %s", title, error_reason(exc), exc)
        return None
