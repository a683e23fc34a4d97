"""``sharp-dataset gc`` on any store: drop leases nobody can rely on any more.

An expired lease no longer protects its unit (any client may take it over), and a lease on a
unit that is already done protects nothing; both only clutter ``status``. Each store deletes
them in one step, each only if it is still the same lease and still expired at that moment.
"""

from __future__ import annotations

from ..ledger.results import GcResult
from ..stores.base import StoreAdmin


def gc(admin: StoreAdmin, now: float) -> GcResult:
    """Delete expired leases and leases on done units."""
    return admin.gc(now)
