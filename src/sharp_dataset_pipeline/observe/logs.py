"""Logging setup (called by the CLI only) with a filter that masks secrets in every record.

The filter is the last line of defence: it applies the project's one redactor (``redact.py``) to the
formatted message and to any traceback, with the run's secrets added to the patterns.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable

from rich.console import Console
from rich.text import Text

from ..redact import redact


class SecretFilter(logging.Filter):
    """Rewrites each record so that its message and traceback carry no secret."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message, self.secrets)
        if masked != message or record.exc_info:
            record.msg, record.args = masked, None
        if record.exc_info:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.msg = f"{masked}\n{redact(text, self.secrets)}"
            record.exc_info = None
            record.exc_text = None
        return True


class ConsoleHandler(logging.Handler):
    """Prints each record as literal text (no markup, no highlighting, no wrapping) on a rich console."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(Text(self.format(record)), soft_wrap=True, highlight=False)
        except (OSError, ValueError):  # a closed or broken stderr: logging must not take the run down
            self.handleError(record)


def setup_logging(
    level: str, secrets: Iterable[str], log_file: str | None = None, console: Console | None = None
) -> None:
    """Root handlers: stderr (and a run log file), every record through the secret filter.

    With ``console`` the stderr lines go through that rich console, so that while a live display
    runs on it they print above the display instead of being drawn over."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level.upper())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [ConsoleHandler(console) if console is not None else logging.StreamHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    secret_filter = SecretFilter(list(secrets))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(secret_filter)
        root.addHandler(handler)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _route_library_handlers()


def _route_library_handlers() -> None:
    """huggingface_hub gives its logger a stderr handler of its own when first imported, so its
    warnings (some carry signed download URLs) would print a second time, unmasked. Drop that
    handler: its records reach the root handlers above, through the secret filter."""
    try:
        import huggingface_hub.utils.logging  # noqa: F401  (adds the handler now, not after setup)
    except ImportError:  # not installed: nothing to route
        return
    library = logging.getLogger("huggingface_hub")
    for handler in list(library.handlers):
        library.removeHandler(handler)
    library.propagate = True
