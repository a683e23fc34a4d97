"""``sharp-dataset remove ID...`` on any store: a takedown, refused for ids never published unless forced."""

from __future__ import annotations

from ..errors import ConfigError
from ..ledger.results import RemoveResult
from ..stores.base import StoreAdmin


def remove(admin: StoreAdmin, item_ids: list[str], reason: str, now: float, *, force: bool = False,
           dry_run: bool = False) -> RemoveResult:
    """Take ``item_ids`` down and exclude them for good (``dry_run``: only say what would happen).

    An id that was never published is refused (``ConfigError``, nothing changed) unless ``force``:
    a typo would otherwise be excluded for ever.
    """
    preview = admin.preview_remove(list(item_ids), now)
    if preview.blocked and not force:
        raise ConfigError(preview.unknown_ids_error())
    if dry_run:
        return preview
    return admin.remove(list(item_ids), reason, now)
