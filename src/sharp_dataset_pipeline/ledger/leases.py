"""Lease rules and lease content. Pure: the clock and the nonce are passed in.

A lease is a time-limited claim on a unit. Its content carries a fresh nonce on every
acquisition and renewal, so two writes of "the same" lease are never byte-identical (a Hub
commit whose files are unchanged is skipped without its compare-and-swap check).
"""

from __future__ import annotations

import json
import math

from ..errors import StoreError
from ..records import Lease

_FIELDS = ("unit", "owner", "nonce", "acquired_at", "expires_at")


def new_lease(unit: str, owner: str, now: float, ttl: float, nonce: str) -> Lease:
    """A lease on ``unit`` for ``owner`` from ``now`` until ``now + ttl``."""
    if ttl <= 0:
        raise StoreError(f"lease ttl must be positive, got {ttl!r}")
    if not owner:
        raise StoreError("a lease needs an owner")
    return Lease(unit=unit, owner=owner, nonce=nonce, acquired_at=now, expires_at=now + ttl)


def renewed(lease: Lease, now: float, ttl: float, nonce: str) -> Lease:
    """The same claim extended to ``now + ttl`` (never shortened), with a new nonce."""
    expires = max(lease.expires_at, now + ttl)
    return Lease(unit=lease.unit, owner=lease.owner, nonce=nonce,
                 acquired_at=lease.acquired_at, expires_at=expires)


def may_take(current: Lease | None, client_id: str, now: float) -> bool:
    """Whether ``client_id`` may (re)write the lease of a unit whose current lease is ``current``.

    Free units and expired leases can be taken; a client always takes its own lease back at
    once (a restarted client with the same id resumes its units without waiting).
    """
    return current is None or current.expired(now) or current.owner == client_id


def encode_lease(lease: Lease) -> bytes:
    """Lease content: a small JSON object with a stable key order."""
    data = {name: getattr(lease, name) for name in _FIELDS}
    return (json.dumps(data, sort_keys=False, separators=(",", ":")) + "\n").encode("utf-8")


def decode_lease(data: bytes) -> Lease:
    """Parse lease content; anything malformed raises ``StoreError`` saying what is wrong."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"lease content is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise StoreError("lease content is not a JSON object")
    missing = [name for name in _FIELDS if name not in obj]
    if missing:
        raise StoreError(f"lease content lacks {', '.join(missing)}")
    for name in ("unit", "owner", "nonce"):
        if not isinstance(obj[name], str) or (name != "nonce" and not obj[name]):
            raise StoreError(f"lease field {name!r} must be a non-empty string")
    times = {}
    for name in ("acquired_at", "expires_at"):
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise StoreError(f"lease field {name!r} must be a finite number, got {value!r}")
        times[name] = float(value)
    return Lease(unit=obj["unit"], owner=obj["owner"], nonce=obj["nonce"], **times)
