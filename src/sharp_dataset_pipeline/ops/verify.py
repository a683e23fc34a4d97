"""``sharp-dataset verify [--fix [--dry-run]]`` on any store: check, repair what is safe, check again.

The checks themselves are pure (``ledger/verify.py``); each store reads itself into them and
repairs itself (``StoreAdmin.verify`` / ``fix``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..ledger.verify import VerifyReport
from ..stores.base import StoreAdmin


def verify(admin: StoreAdmin, clock: Callable[[], float], *, deep: bool = False, fix: bool = False,
           dry_run: bool = False) -> VerifyReport:
    """The store's problems; with ``fix`` the safe ones are repaired first and the store is checked
    again. ``dry_run`` (with ``fix``) repairs nothing: the report then says what ``fix`` would do."""
    fix = fix and not dry_run
    report = admin.verify(clock(), deep)
    fixed = admin.fix(report, clock()) if fix else []
    again = admin.verify(clock(), deep) if fixed else report
    again.fixed, again.dry_run = fixed, dry_run
    return again
