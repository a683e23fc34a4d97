"""A loopback gsplat.org: the tRPC procedures of its share front end, with injectable faults.

Every call is ``POST /share/trpc/<procedure>?batch=1`` with the JSON body ``{"0": <input>}``; answers
are tRPC batch envelopes, ``[{"result": {"data": {"json": <output>}}}]`` (``envelope="plain"`` answers
``{"result": {"data": <output>}}`` instead, the other shape seen in the wild), and errors are
``[{"error": {"json": {"message", "code", "data": {"code", "httpStatus"}}}}]`` with that HTTP status.

Procedures: ``order.uploadGaussianSplat`` (whole file, base64), ``order.chunkedUploadInitiate`` /
``order.chunkedUploadChunk`` / ``order.chunkedUploadFinalize``, ``order.createOrder``. Inputs are
checked the way a strict server would (sizes against the decoded bytes, chunk indices, known upload
and model ids), so a client bug shows up as a 400. ``GET /share/file/<name>`` serves an uploaded
model file back, ``GET /viewer/<shareId>`` a stub page.

Faults: ``faults`` is a ``FaultSchedule`` keyed by procedure name (``"order.createOrder"``) or ANY:
status storms (``faults.status(503, times=2, path=...)``), slow answers (``faults.delay``), dropped
connections, and raw bodies: ``malformed_json()`` and ``missing_share_id()`` build those faults.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .faults import Fault, FaultSchedule
from .server import LoopbackServer, drop_connection

_TYPES = {"ply", "spz", "splat"}


def malformed_json() -> Fault:
    """A 200 whose body is not JSON (a proxy's error page, a cut answer)."""
    body = b'[{"result": {"data": {"json": {"share'
    return Fault(status=200, body=body, headers={"Content-Type": "application/json"})


def missing_share_id(order_id: str = "ord-1") -> Fault:
    """A well-formed createOrder answer that lacks ``shareId``."""
    body = json.dumps([{"result": {"data": {"json": {"id": order_id}}}}]).encode()
    return Fault(status=200, body=body, headers={"Content-Type": "application/json"})


@dataclass
class Call:
    procedure: str
    headers: dict[str, str]
    input: Any


@dataclass
class _Upload:
    filename: str
    size: int
    chunk_size: int
    metadata: dict[str, Any]
    chunks: dict[int, bytes] = field(default_factory=dict)
    total: int = 0


class _BadInput(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status, self.code = status, code


class GsplatEmulator(LoopbackServer):
    """``with GsplatEmulator() as gs:`` then a client on ``ShareOptions(base=gs.base_url, allow_private_base=True)``."""

    def __init__(self, *, envelope: str = "batch") -> None:
        self.envelope = envelope
        self.faults = FaultSchedule()
        self.calls: list[Call] = []
        self.uploads: dict[str, _Upload] = {}
        self.files: dict[str, bytes] = {}  # model file name → bytes
        self.orders: dict[str, dict[str, Any]] = {}  # shareId → order
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------


    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _handler(self)

    def procedures(self) -> list[str]:
        with self._lock:
            return [c.procedure for c in self.calls]

    def model_bytes(self, model_url: str) -> bytes:
        """The bytes stored for a model file URL that an upload returned."""
        return self.files[model_url.rsplit("/", 1)[-1]]

    # -- procedures -----------------------------------------------------------------------------

    def _store_file(self, name: str, kind: str, data: bytes) -> dict[str, str]:
        token = f"{secrets.token_hex(8)}.{kind}"
        with self._lock:
            self.files[token] = data
        return {"modelFileUrl": f"/share/file/{token}", "fileName": name}

    def _upload_direct(self, inp: dict[str, Any]) -> Any:
        f = _field(inp, "gaussianSplatFile", dict)
        kind = _field(f, "type", str)
        if kind not in _TYPES:
            raise _BadInput(f"unsupported type {kind!r}")
        data = _b64(_field(f, "data", str))
        if len(data) != _field(f, "size", int):
            raise _BadInput(f"size {f['size']} does not match the {len(data)} bytes sent")
        return self._store_file(_field(f, "name", str), kind, data)

    def _initiate(self, inp: dict[str, Any]) -> Any:
        upload = _Upload(_field(inp, "filename", str), _field(inp, "fileSize", int), _field(inp, "chunkSize", int),
                         _field(inp, "metadata", dict))
        if upload.size <= 0 or upload.chunk_size <= 0:
            raise _BadInput("fileSize and chunkSize must be positive")
        upload_id = secrets.token_hex(6)
        with self._lock:
            self.uploads[upload_id] = upload
        return {"uploadId": upload_id}

    def _upload(self, inp: dict[str, Any]) -> _Upload:
        upload = self.uploads.get(_field(inp, "uploadId", str))
        if upload is None:
            raise _BadInput("unknown uploadId", 404, "NOT_FOUND")
        return upload

    def _chunk(self, inp: dict[str, Any]) -> Any:
        upload = self._upload(inp)
        index, total = _field(inp, "chunkIndex", int), _field(inp, "totalChunks", int)
        expected_total = -(-upload.size // upload.chunk_size)
        if total != expected_total or not 0 <= index < total:
            raise _BadInput(f"chunk {index} of {total}; this upload has {expected_total} chunks")
        data = _b64(_field(inp, "data", str))
        if len(data) != _field(inp, "size", int):
            raise _BadInput("chunk size does not match its data")
        want = min(upload.chunk_size, upload.size - index * upload.chunk_size)
        if len(data) != want:
            raise _BadInput(f"chunk {index} has {len(data)} bytes, expected {want}")
        with self._lock:
            upload.chunks[index] = data
            upload.total = total
        return {"received": index}

    def _finalize(self, inp: dict[str, Any]) -> Any:
        upload = self._upload(inp)
        total = _field(inp, "totalChunks", int)
        missing = [i for i in range(total) if i not in upload.chunks]
        if missing or total != upload.total:
            raise _BadInput(f"missing chunks {missing}")
        data = b"".join(upload.chunks[i] for i in range(total))
        if len(data) != upload.size:
            raise _BadInput("assembled size differs from fileSize")
        kind = upload.filename.rsplit(".", 1)[-1].lower()
        return {"file": self._store_file(upload.filename, kind if kind in _TYPES else "ply", data)}

    def _create_order(self, inp: dict[str, Any]) -> Any:
        url = _field(inp, "modelFileUrl", str)
        if url.rsplit("/", 1)[-1] not in self.files:
            raise _BadInput("unknown modelFileUrl", 404, "NOT_FOUND")
        share_id = secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
        order = {"id": f"ord-{secrets.token_hex(4)}", "shareId": share_id, "modelFileUrl": url,
                 "title": _field(inp, "title", str), "expirationType": _field(inp, "expirationType", str)}
        with self._lock:
            self.orders[share_id] = order
        return order

    def dispatch(self, procedure: str, inp: Any) -> Any:
        table = {
            "order.uploadGaussianSplat": self._upload_direct,
            "order.chunkedUploadInitiate": self._initiate,
            "order.chunkedUploadChunk": self._chunk,
            "order.chunkedUploadFinalize": self._finalize,
            "order.createOrder": self._create_order,
        }
        if procedure not in table:
            raise _BadInput(f'No "mutation"-procedure on path "{procedure}"', 404, "NOT_FOUND")
        if not isinstance(inp, dict):
            raise _BadInput("input must be an object")
        return table[procedure](inp)

    def envelope_ok(self, output: Any) -> Any:
        return [{"result": {"data": {"json": output}}}] if self.envelope == "batch" else {"result": {"data": output}}


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _BadInput(f"{name}: expected {kind.__name__}")
    return value


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise _BadInput(f"data is not base64: {exc}") from exc


def _error_body(message: str, status: int, code: str) -> bytes:
    err = {"json": {"message": message, "code": -32600, "data": {"code": code, "httpStatus": status}}}
    return json.dumps([{"error": err}]).encode()


def _handler(owner: GsplatEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            name = path.rsplit("/", 1)[-1]
            if path.startswith("/share/file/") and name in owner.files:
                self._send(200, owner.files[name], "application/octet-stream")
            elif path.startswith("/viewer/") and name in owner.orders:
                self._send(200, b"<!doctype html><title>viewer</title>", "text/html")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            procedure = parts.path.removeprefix("/share/trpc/")
            try:
                inp = json.loads(body)["0"] if parse_qs(parts.query).get("batch") == ["1"] else None
            except (ValueError, KeyError, TypeError):
                inp = None
            with owner._lock:
                owner.calls.append(Call(procedure, dict(self.headers.items()), inp))
            fault = owner.faults.next(procedure)
            if fault is not None and self._apply(fault):
                return
            if inp is None or not parts.path.startswith("/share/trpc/"):
                self._send(400, _error_body("expected ?batch=1 and a {\"0\": input} body", 400, "BAD_REQUEST"))
                return
            try:
                output = owner.dispatch(procedure, inp)
            except _BadInput as exc:
                self._send(exc.status, _error_body(str(exc), exc.status, exc.code))
                return
            self._send(200, json.dumps(owner.envelope_ok(output)).encode())

        def _apply(self, fault: Fault) -> bool:
            """Misbehave as ``fault`` says; True when the answer has been given (or withheld)."""
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.drop:
                drop_connection(self)
                return True
            if fault.status:
                body = fault.body or _error_body(f"injected {fault.status}", fault.status, "INTERNAL_SERVER_ERROR")
                self._send(fault.status, body, headers=fault.headers)
                return True
            return False  # a pure delay: answer normally, late

        def _send(self, status: int, body: bytes, ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            extra = dict(headers or {})
            self.send_header("Content-Type", extra.pop("Content-Type", ctype))
            self.send_header("Content-Length", str(len(body)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


__all__ = ["Call", "GsplatEmulator", "malformed_json", "missing_share_id"]
