"""``sharp-dataset gc``: drop leases nobody can rely on any more (local store).

An expired lease no longer protects its unit (any client may take it over), and a lease on a
unit that is already done protects nothing; both only clutter ``status``. They are deleted in
one write transaction, each only if it is still the same lease (same nonce) and still
expired at that moment, so a lease renewed or re-taken meanwhile is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..records import Lease
from ..stores import local_schema as sql
from .local_ledger import connect_ledger

log = logging.getLogger(__name__)


@dataclass
class GcResult:
    expired: list[Lease] = field(default_factory=list)
    on_done_units: list[Lease] = field(default_factory=list)

    def text(self) -> str:
        return (f"removed {len(self.expired)} expired leases and {len(self.on_done_units)} leases on done units"
                + "".join(f"\n  {le.unit} (owner {le.owner})" for le in self.expired + self.on_done_units))


def gc_local(root: Path, now: float) -> GcResult:
    """Delete expired leases and leases on done units, in one write transaction."""
    result = GcResult()
    conn = connect_ledger(Path(root))
    try:
        with sql.write_tx(conn):
            done = {r[0] for r in conn.execute(
                "SELECT l.unit FROM leases l JOIN units_done d ON d.unit = l.unit")}
            leases = [Lease(*r) for r in conn.execute(
                "SELECT unit, owner, nonce, acquired_at, expires_at FROM leases ORDER BY unit")]
            for lease in leases:
                if lease.unit in done:
                    result.on_done_units.append(lease)
                elif lease.expired(now):
                    result.expired.append(lease)
                else:
                    continue
                conn.execute("DELETE FROM leases WHERE unit = ? AND nonce = ?", (lease.unit, lease.nonce))
    finally:
        conn.close()
    log.debug("gc: %d expired leases, %d leases on done units removed", len(result.expired),
             len(result.on_done_units))
    return result
