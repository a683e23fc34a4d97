"""Logging setup (called by the CLI only) with a filter that masks secrets in every record."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_PATTERNS = [
    re.compile(r"(Client-ID\s+)[^\s'\"&]+", re.IGNORECASE),
    re.compile(r"(Bearer\s+)[^\s'\"&]+", re.IGNORECASE),
    re.compile(r"((?:client_id|access_token|token)=)[^\s'\"&]+", re.IGNORECASE),
    re.compile(r"\b(hf_)[A-Za-z0-9]{20,}"),
]


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove known secrets and anything shaped like a credential from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


class SecretFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message, self.secrets)
        if masked != message or record.exc_info:
            record.msg, record.args = masked, None
        if record.exc_info:
            import traceback

            text = "".join(traceback.format_exception(*record.exc_info))
            record.msg = f"{masked}\n{mask(text, self.secrets)}"
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(level: str, secrets: Iterable[str], log_file: str | None = None) -> None:
    """Root handlers: stderr (and a run log file), every record through the secret filter."""
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(level.upper())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    secret_filter = SecretFilter(list(secrets))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(secret_filter)
        root.addHandler(handler)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
