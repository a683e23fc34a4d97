"""Lease rules and lease content (pure)."""

from __future__ import annotations

import json

import pytest

from sharp_dataset_pipeline.errors import StoreError
from sharp_dataset_pipeline.ledger.leases import decode_lease, encode_lease, may_take, new_lease, renewed
from sharp_dataset_pipeline.records import Lease


def test_new_lease_spans_ttl() -> None:
    lease = new_lease("list/oldest/000000-000299", "c1", 100.0, 60.0, "n1")
    assert lease == Lease("list/oldest/000000-000299", "c1", "n1", 100.0, 160.0)
    assert not lease.expired(159.9) and lease.expired(160.0)


@pytest.mark.parametrize(("ttl", "owner"), [(0.0, "c1"), (-1.0, "c1"), (10.0, "")])
def test_new_lease_refuses_nonsense(ttl: float, owner: str) -> None:
    with pytest.raises(StoreError):
        new_lease("u", owner, 0.0, ttl, "n")


@pytest.mark.parametrize(
    ("current", "client", "now", "expected"),
    [
        (None, "c1", 0.0, True),
        (Lease("u", "c2", "n", 0.0, 100.0), "c1", 50.0, False),
        (Lease("u", "c2", "n", 0.0, 100.0), "c1", 100.0, True),  # expired: takeover
        (Lease("u", "c2", "n", 0.0, 100.0), "c1", 1e9, True),
        (Lease("u", "c1", "n", 0.0, 100.0), "c1", 50.0, True),  # own lease back at once
    ],
)
def test_may_take(current: Lease | None, client: str, now: float, expected: bool) -> None:
    assert may_take(current, client, now) is expected


def test_renewed_extends_never_shortens_and_changes_nonce() -> None:
    lease = Lease("u", "c1", "n1", 0.0, 100.0)
    longer = renewed(lease, 50.0, 100.0, "n2")
    assert longer.expires_at == 150.0 and longer.nonce == "n2" and longer.acquired_at == 0.0
    assert renewed(lease, 10.0, 5.0, "n3").expires_at == 100.0


def test_encode_decode_roundtrip() -> None:
    lease = Lease("search/red car/latest/p001-p010", "host-a", "f00d", 1.5, 61.5)
    data = encode_lease(lease)
    assert list(json.loads(data)) == ["unit", "owner", "nonce", "acquired_at", "expires_at"]
    assert decode_lease(data) == lease


def test_fresh_nonce_makes_content_unique() -> None:
    a = encode_lease(new_lease("u", "c", 1.0, 10.0, "aaaa"))
    b = encode_lease(new_lease("u", "c", 1.0, 10.0, "bbbb"))
    assert a != b


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"unit": "u", "owner": "o", "nonce": "n", "acquired_at": 1}', "lacks expires_at"),
        (b'{"unit": "u", "owner": "", "nonce": "n", "acquired_at": 1, "expires_at": 2}', "owner"),
        (b'{"unit": 3, "owner": "o", "nonce": "n", "acquired_at": 1, "expires_at": 2}', "unit"),
        (b'{"unit": "u", "owner": "o", "nonce": "n", "acquired_at": "1", "expires_at": 2}', "acquired_at"),
        (b'{"unit": "u", "owner": "o", "nonce": "n", "acquired_at": 1, "expires_at": true}', "expires_at"),
        (b'{"unit": "u", "owner": "o", "nonce": "n", "acquired_at": 1, "expires_at": NaN}', "expires_at"),
    ],
)
def test_decode_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        decode_lease(data)
