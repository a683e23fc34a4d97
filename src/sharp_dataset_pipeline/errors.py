"""The few error types of the project.

Every client maps its wire statuses onto these in one function; messages carry item, unit and
request ids where known, never tokens or keys.
"""

from __future__ import annotations


class SharpDatasetError(Exception):
    """Base of every error raised on purpose by this package."""


class ConfigError(SharpDatasetError):
    """A setting is missing or invalid; the CLI prints the message and exits 2."""


class TransientError(SharpDatasetError):
    """Worth retrying later (timeouts, 5xx, connection resets)."""

    def __init__(self, message: str, reason: str = "transient") -> None:
        super().__init__(message)
        self.reason = reason


class PermanentError(SharpDatasetError):
    """Retrying will not help (404, an undecodable image, an input over a size limit)."""

    def __init__(self, message: str, reason: str = "permanent") -> None:
        super().__init__(message)
        self.reason = reason


class RateLimited(SharpDatasetError):
    """A service said (or its headers said) to stop; ``retry_after_s`` is how long to wait."""

    def __init__(self, message: str, retry_after_s: float, service: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.service = service


class LeaseConflict(SharpDatasetError):
    """Someone else changed the coordination state first: re-read and re-decide."""


class StoreError(SharpDatasetError):
    """The store could not complete an operation; nothing was published by it."""


class CommitQuotaSpent(StoreError):
    """The run is stopping and the store's commit quota has no room before the drain ends: the
    operation was not sent (nothing of it was published). ``retry_after_s``: when the quota reopens."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FatalDeviceError(SharpDatasetError):
    """The prediction device is unusable; the run stops cleanly."""
