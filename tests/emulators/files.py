"""A loopback static-file HTTP server with injectable faults, plus builders for awkward image files.

``FileServer`` serves in-memory files over real HTTP/1.1 (keep-alive, Content-Length) on an ephemeral
port of 127.0.0.1, in a background thread. Its ``faults`` schedule (see ``faults.py``) makes chosen
requests fail: status storms, 5xx then OK, slow answers, truncated bodies, dropped connections.
Every request is recorded (method, path with query, headers) for assertions.
"""

from __future__ import annotations

import io
import mimetypes
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from .faults import Fault, FaultSchedule
from .server import LoopbackServer, drop_connection


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


class FileServer(LoopbackServer):
    """``with FileServer() as srv: srv.put("/a.jpg", data); httpx.get(srv.url("/a.jpg"))``."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.redirects: dict[str, str] = {}
        self.faults = FaultSchedule()
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def put(self, path: str, data: bytes, content_type: str = "") -> str:
        """Serve ``data`` at ``path`` (a query string is allowed and ignored); returns its URL."""
        key = urlsplit(path).path
        ctype = content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"
        self.files[key] = (data, ctype)
        return self.url(path)

    def redirect(self, path: str, target: str) -> str:
        """Answer ``path`` with a 302 to ``target`` (a path on this server); returns the URL."""
        self.redirects[path] = target
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


    def hits(self, path: str) -> int:
        """How many requests asked for ``path`` (query ignored)."""
        with self._lock:
            return sum(1 for r in self.requests if urlsplit(r.path).path == path)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _make_handler(self)

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)


def _make_handler(owner: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            owner._record(Request("GET", self.path, dict(self.headers.items())))
            path = urlsplit(self.path).path
            fault = owner.faults.next(path)
            if fault is not None and fault.delay_s:
                time.sleep(fault.delay_s)
            if fault is not None and fault.drop:
                self._drop()
                return
            if fault is not None and fault.status:
                self._send(fault.status, fault.body, "text/plain", fault.headers)
                return
            if path in owner.redirects:
                self._send(302, b"", "text/plain", {"Location": owner.redirects[path]})
                return
            if path not in owner.files:
                self._send(404, b"not found", "text/plain", {})
                return
            data, ctype = owner.files[path]
            if fault is not None and fault.trickle_s:
                self._trickle(data, ctype, fault.trickle_s)
                return
            self._send(200, data, ctype, {}, truncate_to=fault.truncate_to if fault else None)

        def _trickle(self, body: bytes, ctype: str, seconds_per_byte: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(seconds_per_byte)
            except OSError:  # the client gave up: that is the point of the fault
                self.close_connection = True

        def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str],
                  truncate_to: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            if truncate_to is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body if truncate_to is None else body[:truncate_to])
            self.wfile.flush()
            if truncate_to is not None:
                self.close_connection = True
                self._drop()

        def _drop(self) -> None:
            drop_connection(self)

    return Handler


# Builders for image files, shared by the fetch, source and pipeline tests.


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but carries almost no pixel data (nothing allocated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand: ``values`` uint16 H x W (grey) or H x W x 3 (RGB)."""
    height, width = values.shape[:2]
    color_type = 2 if values.ndim == 3 else 0
    raw = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def smooth_rgb(width: int = 60, height: int = 40, seed: int = 0) -> np.ndarray:
    """A small smooth RGB picture (compresses well, survives JPEG round trips)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(3, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR))


def jpeg_bytes(width: int = 60, height: int = 40, seed: int = 0, **save_kwargs: object) -> bytes:
    return encode(Image.fromarray(smooth_rgb(width, height, seed)), "JPEG", quality=90, **save_kwargs)


def bad_input_files() -> dict[str, tuple[bytes, str]]:
    """File name -> (content, expected decode outcome: ``"ok"`` or a PermanentError reason)."""
    rgb = smooth_rgb()
    good_jpeg = encode(Image.fromarray(rgb), "JPEG", quality=90)
    grey16 = np.linspace(0, 65535, 60 * 40).reshape(40, 60).astype(np.uint16)
    return {
        "zero.jpg": (b"", "empty_file"),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "truncated_image"),
        "text.jpg": (b"this is not a picture\n" * 10, "not_an_image"),
        "cmyk.jpg": (encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"), "ok"),
        "deep.png": (png16(grey16), "ok"),
        "palette.png": (encode(Image.fromarray(rgb).convert("P"), "PNG"), "ok"),
        "grey_alpha.png": (encode(Image.fromarray(rgb).convert("LA"), "PNG"), "ok"),
        "huge.png": (png_claiming(30000, 30000), "too_large"),
    }


__all__ = ["Fault", "FaultSchedule", "FileServer", "Request", "bad_input_files", "encode", "jpeg_bytes",
           "png16", "png_claiming", "smooth_rgb"]
