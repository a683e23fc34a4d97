"""HTTP plumbing shared by the loopback Hub's two hosts (``hub.py``: the Hub, ``hub_lfs.py``: LFS storage)."""

from __future__ import annotations

import hashlib
import json
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from .hub import HubEmulator


class HubError(Exception):
    """An answer other than success: status, message (``X-Error-Message``), ``X-Error-Code``."""

    def __init__(self, status: int, message: str, code: str = "", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


class Drop(Exception):
    """Close the connection without an answer."""


class HubHandlerBase(BaseHTTPRequestHandler):
    """Request plumbing of both hosts: body reading, counters, run-time faults, answers; ``_route`` decides."""

    hub: HubEmulator
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle delay: otherwise every request waits ~40 ms for an ACK.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read stats, not logs
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # -- plumbing ------------------------------------------------------------------------------

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_body(self, method: str) -> bytes:
        return self._body() if method in ("POST", "DELETE", "PUT") else b""

    def _bucket(self, raw_path: str) -> str:
        return "resolver" if "/resolve/" in raw_path else "api"

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        raw_path, _, query = self.path.partition("?")
        try:
            body = self._read_body(method)
        except Drop:
            self.close_connection = True
            return
        auth = self.headers.get("Authorization") or ""
        if auth:
            hub.auth_headers_seen += 1
            hub.token_hashes.add(hashlib.sha256(auth.removeprefix("Bearer ").encode()).hexdigest())
        hub.stats[self._bucket(raw_path)] += 1
        if hub.faults.delay_s:
            time.sleep(hub.faults.delay_s)
        # Preupload is spared: the client retries it by itself with real sleeps (about 23 s).
        if hub.faults.down and "/preupload/" not in raw_path:
            self.close_connection = True
            return
        try:
            status, payload, headers = self._route(method, raw_path, parse_qs(query), body)
        except Drop:
            self.close_connection = True
            return
        except HubError as err:
            hub.stats[f"status_{err.status}"] += 1
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            status, payload = err.status, {"error": err.message}
        self._send(method, status, payload, headers)

    def _send(self, method: str, status: int, payload: Any, headers: dict[str, str]) -> None:
        if isinstance(payload, bytes):
            data = payload
            headers.setdefault("Content-Type", "application/octet-stream")
        else:
            data = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _route(self, method: str, raw_path: str, query: dict, body: bytes) -> tuple[int, Any, dict]:
        raise NotImplementedError
