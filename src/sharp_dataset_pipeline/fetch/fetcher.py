"""The fetch stage for one item: original bytes into ``images_dir``, decoded pixels out.

A stage function: no threads, no globals, so it runs unchanged in a thread pool or a remote worker.
The original file is kept byte for byte (hard-linked or copied for local paths, downloaded for URLs)
and named ``<id>.<ext>`` with the extension of its real format, whatever the URL or name claimed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import uuid
from pathlib import Path

import httpx

from ..errors import PermanentError
from ..records import FetchedImage, Item
from ..redact import strip_url
from .download import download
from .image import DecodedImage, decode_for_predictor

logger = logging.getLogger(__name__)

def item_source(item: Item) -> str:
    """The input ``item`` came from, fit to store and print (a ``Failure.source``): credentials removed."""
    return strip_url(item.origin)


def fetch_item(
    item: Item,
    images_dir: Path,
    client: httpx.Client | None,
    *,
    max_pixels: int,
    max_bytes: int,
    attempts: int,
    retry_base_s: float = 0.5,
    deadline_s: float | None = None,
) -> FetchedImage:
    """Bring ``item``'s original into ``images_dir/<id>.<ext>`` and decode it for the predictor.

    Raises ``TransientError`` (retry later), ``RateLimited`` or ``PermanentError`` (with ``reason``:
    ``missing_file``, ``too_large``, ``no_location``, ``http_<status>`` or one of the decoder's).
    Nothing is left in ``images_dir`` for an item that fails. ``retry_base_s`` scales the backoff;
    ``deadline_s`` bounds a URL's whole download, retries included (``FETCH_TIMEOUT_SECS``).
    """
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    if item.path:
        return _fetch_path(item, images_dir, max_pixels=max_pixels, max_bytes=max_bytes)
    if item.url:
        if client is None:
            raise ValueError("fetch_item needs an HTTP client for URL items")
        return _fetch_url(item, images_dir, client, max_pixels=max_pixels, max_bytes=max_bytes,
                          attempts=attempts, retry_base_s=retry_base_s, deadline_s=deadline_s)
    raise PermanentError(f"item {item.id} has neither a path nor a URL", reason="no_location")


def _fetch_path(item: Item, images_dir: Path, *, max_pixels: int, max_bytes: int) -> FetchedImage:
    src = Path(item.path)
    try:
        info = src.stat()
    except FileNotFoundError as exc:
        raise PermanentError(f"item {item.id}: {src} does not exist", reason="missing_file") from exc
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the copy below for ever
        raise PermanentError(f"item {item.id}: {src} is not a regular file", reason="not_a_regular_file")
    size = info.st_size
    if size > max_bytes:
        raise PermanentError(f"item {item.id}: {size} bytes, over the {max_bytes}-byte limit",
                             reason="too_large")
    # A private copy, never a hard link: a later in-place edit of the user's photo must not change
    # what we decoded and published. The photo is read once: the bytes read are the ones hashed,
    # written as the copy and decoded, so bytes and pixels stay consistent.
    data = _read_regular(src, max_bytes, item.id)
    staged = images_dir / f".{item.id}.{uuid.uuid4().hex[:8]}.part"
    try:
        staged.write_bytes(data)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return _decode_and_place(item, staged, images_dir, max_pixels, len(data), hashlib.sha256(data).hexdigest(),
                             data)


def _fetch_url(
    item: Item, images_dir: Path, client: httpx.Client, *, max_pixels: int, max_bytes: int, attempts: int,
    retry_base_s: float, deadline_s: float | None,
) -> FetchedImage:
    # The real extension is known only after decoding, so the bytes land under a neutral name first.
    # Unique per attempt: two items (or two runs sharing a folder) never write the same temp file.
    staged = images_dir / f".{item.id}.{uuid.uuid4().hex[:8]}.download"
    size, digest = download(item.url, staged, client, max_bytes=max_bytes, attempts=attempts,
                            base_s=retry_base_s, service="image", item_id=item.id, deadline_s=deadline_s)
    return _decode_and_place(item, staged, images_dir, max_pixels, size, digest)


def _decode_and_place(item: Item, staged: Path, images_dir: Path, max_pixels: int, size: int,
                      digest: str, data: bytes | None = None) -> FetchedImage:
    """Decode the staged original (from ``data``, its bytes, when held), then name it by its real
    format; the staged file never outlives this."""
    try:
        decoded = decode_for_predictor(staged, max_pixels=max_pixels, focal_hint_mm35=item.focal_hint_mm35,
                                       label=item_source(item), data=data)
        dest = images_dir / f"{item.id}.{decoded.format}"
        os.replace(staged, dest)
    finally:
        staged.unlink(missing_ok=True)
    return _fetched(item, dest, decoded, size, digest)


def _fetched(item: Item, dest: Path, decoded: DecodedImage, size: int, digest: str) -> FetchedImage:
    return FetchedImage(
        item=item, original_path=dest, ext=decoded.format, rgb=decoded.rgb, width=decoded.width,
        height=decoded.height, focal_px=decoded.focal_px, focal_source=decoded.focal_source,
        size=size, sha256=digest,
    )


def _read_regular(src: Path, max_bytes: int, item_id: str) -> bytes:
    """The file's bytes, read once; a file that grew past ``max_bytes`` since its stat is refused, and
    so is one swapped for something else (a FIFO would block the read for ever: opened non-blocking)."""
    fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PermanentError(f"item {item_id}: {src} is not a regular file", reason="not_a_regular_file")
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PermanentError(f"item {item_id}: over the {max_bytes}-byte limit", reason="too_large")
    return data
