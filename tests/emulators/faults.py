"""Fault schedules shared by the loopback servers.

A server asks ``schedule.next(path)`` before answering each request; the answer is either None (behave
normally) or a ``Fault`` describing how to misbehave this once. Faults queue per path (or for any path)
and are consumed in order, so a test can say "503 twice, then serve normally" or "a storm of 429s".
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Fault:
    """One misbehaviour. Fields combine: e.g. ``delay_s`` with ``truncate_to``.

    - ``status``: answer with this status (and ``headers``, ``body``) instead of the real response;
    - ``truncate_to``: send the real headers (full Content-Length) but only this many body bytes, then
      close the connection;
    - ``delay_s``: sleep before answering (longer than the client timeout = a timeout);
    - ``drop``: close the connection without answering at all;
    - ``trickle_s``: send the real headers, then the body one byte every ``trickle_s`` seconds (each
      read arrives well within a read timeout, the whole body takes for ever).
    """

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    truncate_to: int | None = None
    delay_s: float = 0.0
    drop: bool = False
    trickle_s: float = 0.0


ANY = "*"


class FaultSchedule:
    """Thread-safe queues of faults, per request path or for any path (``ANY``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Fault]] = {}
        self.served: list[tuple[str, Fault | None]] = []

    def add(self, *faults: Fault, path: str = ANY, times: int = 1) -> FaultSchedule:
        """Queue ``faults`` (in order), repeated ``times`` times, for ``path``."""
        with self._lock:
            queue = self._queues.setdefault(path, deque())
            for _ in range(times):
                queue.extend(faults)
        return self

    def status(self, code: int, *, times: int = 1, path: str = ANY, **headers: str) -> FaultSchedule:
        """A storm of ``times`` responses with status ``code`` (e.g. 503 or 429 with Retry_After="1")."""
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        return self.add(Fault(status=code, headers=hdrs), path=path, times=times)

    def truncate(self, keep: int, *, times: int = 1, path: str = ANY) -> FaultSchedule:
        """Send only ``keep`` body bytes under the full Content-Length, ``times`` times."""
        return self.add(Fault(truncate_to=keep), path=path, times=times)

    def delay(self, seconds: float, *, times: int = 1, path: str = ANY) -> FaultSchedule:
        """Answer late (a client with a shorter timeout sees a timeout)."""
        return self.add(Fault(delay_s=seconds), path=path, times=times)

    def trickle(self, seconds_per_byte: float, *, times: int = 1, path: str = ANY) -> FaultSchedule:
        """Send the body one byte every ``seconds_per_byte`` seconds."""
        return self.add(Fault(trickle_s=seconds_per_byte), path=path, times=times)

    def drop(self, *, times: int = 1, path: str = ANY) -> FaultSchedule:
        """Close the connection without a response."""
        return self.add(Fault(drop=True), path=path, times=times)

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()

    def pending(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())

    def next(self, path: str) -> Fault | None:
        """The fault for this request (path-specific first, then ``ANY``), consumed; None if none is due."""
        with self._lock:
            fault = None
            for key in (path, ANY):
                queue = self._queues.get(key)
                if queue:
                    fault = queue.popleft()
                    break
            self.served.append((path, fault))
            return fault
