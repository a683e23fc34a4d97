"""Serve a built gallery on loopback (``sharp-dataset gallery --serve``).

Only 127.0.0.1 is bound: the gallery is for the person at this machine. Browsers refuse to
let a page opened from a file read the splat files the viewer needs, hence this server.
"""

from __future__ import annotations

import functools
import logging
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class _Handler(SimpleHTTPRequestHandler):
    # The engine is an ES module: browsers require a JavaScript type for it.
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".ply": "application/octet-stream", ".svg": "image/svg+xml"}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("gallery server: " + format, *args)


class GalleryServer:
    """A threaded static server for ``site`` on 127.0.0.1; ``port=0`` picks a free port."""

    def __init__(self, site: Path, port: int = 0) -> None:
        handler = functools.partial(_Handler, directory=str(Path(site)))
        self._httpd = ThreadingHTTPServer((LOOPBACK, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._httpd.server_address[1]}/"

    def start(self) -> GalleryServer:
        """Serve from a background thread (tests and callers that go on working)."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gallery-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the CLI)."""
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GalleryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
