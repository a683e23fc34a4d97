"""STOP file, PAUSE file, Ctrl+C and SIGTERM → one stop event (and an abort on a second Ctrl+C)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


class StopControl:
    """Cooperative control shared by every stage.

    ``stopping`` means: take no new work, drain what is in flight through publish.
    ``aborting`` means: publish only what is already finished, then exit (the store stays
    consistent because every publish is atomic).
    """

    def __init__(self, control_dir: Path, stop_file: str = "STOP", pause_file: str = "PAUSE") -> None:
        self.stop_path = control_dir / stop_file
        self.pause_path = control_dir / pause_file
        self._stop = threading.Event()
        self._abort = threading.Event()
        self.reason = ""
        self._unsaid: list[str] = []
        self._previous: dict[int, Callable[..., object] | int | None] = {}

    def request_stop(self, reason: str, *, quiet: bool = False) -> None:
        """Stop taking work. ``quiet``: record the message for ``announce()`` instead of logging it
        (a signal handler must not write: it can interrupt a thread in the middle of a write)."""
        if not self._stop.is_set():
            self.reason = reason
            self._say(f"stopping: {reason}; draining work in flight", quiet)
        self._stop.set()

    def request_abort(self, reason: str, *, quiet: bool = False) -> None:
        self.request_stop(reason, quiet=quiet)
        if not self._abort.is_set():
            self._say(f"aborting: {reason}; publishing only finished items", quiet)
        self._abort.set()

    def _say(self, message: str, quiet: bool) -> None:
        if quiet:
            self._unsaid.append(message)
        else:
            log.warning("%s", message)

    def announce(self) -> None:
        """Log what a signal handler recorded; called often by the run's main loop."""
        while self._unsaid:
            log.warning("%s", self._unsaid.pop(0))

    @property
    def stopping(self) -> bool:
        if not self._stop.is_set() and self.stop_path.exists():
            self.request_stop(f"STOP file {self.stop_path}")
        return self._stop.is_set()

    @property
    def event(self) -> threading.Event:
        """Set once a stop is requested (by a signal, ``request_stop`` or the STOP file as soon as
        ``stopping`` has seen it): what a long wait elsewhere waits on, to end early."""
        return self._stop

    @property
    def aborting(self) -> bool:
        return self._abort.is_set()

    @property
    def paused(self) -> bool:
        return self.pause_path.exists()

    def wait_while_paused(self, poll_s: float = 0.5) -> None:
        """Block intake while the PAUSE file exists (a stop ends the pause)."""
        announced = False
        while self.paused and not self.stopping:
            if not announced:
                log.warning("paused: remove %s to continue", self.pause_path)
                announced = True
            time.sleep(poll_s)
        if announced:
            log.warning("resumed")

    def install_signal_handlers(self) -> None:
        """First Ctrl+C / SIGTERM: stop and drain. Second Ctrl+C: abort. Third: exit at once."""
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self._abort.is_set() and signum == signal.SIGINT:
                # Third Ctrl+C: leave now. Every publish step is atomic (and the local store repairs
                # a half-staged batch on its next open), so the dataset stays consistent.
                log.error("third %s: exiting immediately", name)
                os._exit(130)
            if self._stop.is_set() and signum == signal.SIGINT:
                self.request_abort(f"second {name}", quiet=True)
            else:
                self.request_stop(name, quiet=True)

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
