"""The local store's unit leases on its ledger: compare-and-swap ``acquire``, ``renew``, ``release``,
``unit_status``, and the rule that a lease held by a process of this host that has exited is free
at once (its death is visible here).
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
from collections.abc import Callable, Iterable

from ..fsio import pid_alive
from ..ledger.leases import may_take, new_lease
from ..records import Lease, Unit
from . import local_schema as sql
from .base import UnitStatus

__all__ = ["HOST", "LocalLeases", "drop_dead_leases_on_done_units"]

log = logging.getLogger(__name__)


def _this_host() -> str:
    """Where a pid means something: the host name plus, on Linux, the pid namespace (two containers
    with one host name sharing a store folder must not judge each other's pids)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}" if namespace else socket.gethostname()


HOST = _this_host()


class LocalLeases:
    """Unit leases of ``LocalStore`` in its SQLite ledger (one write transaction per call)."""

    _clock: Callable[[], float]
    _conn: Callable[[], sqlite3.Connection]

    def acquire(self, unit: Unit, client_id: str, ttl_s: float, reopen: bool = False) -> Lease | None:
        """Compare-and-swap in one write transaction: free, expired or own lease → a new lease.
        A done unit is leased only when ``reopen`` (``run --redo``)."""
        conn = self._conn()
        with sql.write_tx(conn):
            now = self._clock()
            if not reopen and conn.execute("SELECT 1 FROM units_done WHERE unit = ?", (unit.key,)).fetchone():
                return None
            current = sql.get_lease(conn, unit.key)
            if not (may_take(current, client_id, now) or self._holder_dead(conn, unit.key)):
                return None
            if current is not None and current.owner != client_id and not current.expired(now):
                log.info("taking over %s: its holder %s was a process of this host that is gone",
                         unit.key, current.owner)
            lease = new_lease(unit.key, client_id, now, ttl_s, secrets.token_hex(8))
            sql.put_lease(conn, lease, os.getpid(), HOST)
        return lease

    @staticmethod
    def _holder_dead(conn: sqlite3.Connection, unit: str) -> bool:
        """Whether the lease was last taken or renewed by a process of this host that has exited:
        its death is visible here, so waiting out the lease would only waste time."""
        pid, host = sql.lease_holder(conn, unit)
        return pid > 0 and host == HOST and not pid_alive(pid)

    def renew(self, unit_keys: Iterable[str], client_id: str, ttl_s: float) -> None:
        """Extend the caller's own leases; leases now held by others are left alone."""
        keys = list(unit_keys)
        conn = self._conn()
        with sql.write_tx(conn):
            touched = sql.renew_leases(conn, keys, client_id, self._clock() + ttl_s, os.getpid(), HOST)
        if touched < len(set(keys)):
            log.warning("renewed %d of %d leases for %s; the rest are no longer ours",
                        touched, len(set(keys)), client_id)

    def release(self, unit_keys: Iterable[str], client_id: str) -> None:
        conn = self._conn()
        with sql.write_tx(conn):
            sql.delete_leases(conn, unit_keys, client_id)

    def unit_status(self, unit_keys: Iterable[str]) -> dict[str, UnitStatus]:
        keys = sorted(set(unit_keys))
        out = {key: UnitStatus() for key in keys}
        conn = self._conn()
        with sql.read_tx(conn):
            for part in sql.chunks(keys):
                q = sql.marks(len(part))
                for (unit,) in conn.execute(f"SELECT unit FROM units_done WHERE unit IN ({q})", part):
                    out[unit].done = True
                for lease in sql.leases_of(conn, part):
                    out[lease.unit].lease = lease
                models, failed = sql.unit_contents(conn, part)
                for unit, found in models.items():
                    out[unit].models = found
                for unit, n in failed.items():
                    out[unit].failed = n
        return out

    def leases(self) -> list[Lease]:
        """Every lease row (expired ones included; ``Lease.expired`` tells)."""
        rows = self._conn().execute(
            "SELECT unit, owner, nonce, acquired_at, expires_at FROM leases ORDER BY unit")
        return [Lease(*row) for row in rows]


def drop_dead_leases_on_done_units(conn: sqlite3.Connection) -> list[str]:
    """Delete the leases on units already done whose holder was a process of this host that has exited
    (a ``run --redo`` killed mid-way): no run but a redo ever takes such a lease over, so without this it
    stays, and ``verify`` reports it, until it expires and ``gc`` runs. Returns the units freed."""
    with sql.write_tx(conn):
        held = conn.execute(
            "SELECT l.unit, l.pid, l.host FROM leases l JOIN units_done d ON d.unit = l.unit").fetchall()
        dead = [str(unit) for unit, pid, host in held
                if pid and int(pid) > 0 and host == HOST and not pid_alive(int(pid))]
        conn.executemany("DELETE FROM leases WHERE unit = ?", [(u,) for u in dead])
    if dead:
        log.info("freed %d lease(s) on done units held by processes of this host that are gone", len(dead))
    return dead
