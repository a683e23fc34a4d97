"""``verify`` checks of the sharded layout (pure): rows' members against the shards they name.

Every member of a row must lie inside its shard as listed (``missing_member``); where a store can read
a shard's tar headers cheaply (a local file), its member listing must hold every member at its offset
with its size (``tar_shard.check_listing``); ``deep``, each shard is read once and every member's offset,
size and sha256 compared with the rows (``member_mismatch``, through ``tar_shard.verify_shard``); a
member absent from its tar is a ``missing_member`` either way; the Parquet index must hold exactly the JSONL rows' ids
(``index_mismatch``). A shard no row references is an ``orphan_file`` like any other file: the shard
paths the rows name are returned as referenced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import BinaryIO

from ..errors import StoreError
from ..publish.index_fields import stale_fields
from ..publish.parquet_index import ShardMember, row_members
from ..publish.tar_shard import ABSENT_FROM_SHARD, MemberMismatch, MemberRecord, check_listing, verify_shard
from ..records import IndexRow

# Opens a shard's local bytes for reading (the caller's store: the file itself or a downloaded copy).
ShardOpener = Callable[[str], BinaryIO]
# A shard's member listing from its tar headers (``tar_shard.list_members``), where reading them is cheap.
ShardLister = Callable[[str], list[MemberRecord]]
# (kind, subject, detail, target), built into ``verify.Problem`` by the caller (no import cycle).
Found = tuple[str, str, str, str]


def _members(rows: dict[str, IndexRow]) -> tuple[dict[str, list[tuple[str, ShardMember]]], list[Found]]:
    by_shard: dict[str, list[tuple[str, ShardMember]]] = {}
    bad: list[Found] = []
    for item_id in sorted(rows):
        row = rows[item_id]
        if not row.shard_path:
            continue
        try:
            members = row_members(row)
        except StoreError as exc:
            bad.append(("missing_member", item_id, str(exc)[:200], row.shard_path))
            continue
        if not members:
            bad.append(("missing_member", item_id, f"names shard {row.shard_path} but no members", row.shard_path))
        for m in members:
            by_shard.setdefault(m.shard, []).append((item_id, m))
    return by_shard, bad


def _shard_lines(shard: str, expected: list[MemberRecord], opener: ShardOpener | None,
                 lister: ShardLister | None) -> list[str]:
    """One shard's problem lines: every member hashed (``opener``), else its member listing (``lister``)."""
    try:
        if opener is not None:
            with opener(shard) as src:
                return verify_shard(src, expected)
        assert lister is not None
        return check_listing(lister(shard), expected)
    except (MemberMismatch, OSError) as exc:
        return [f"cannot read the shard: {exc}"]


def shard_problems(rows: dict[str, IndexRow], listing: dict[str, int], opener: ShardOpener | None = None,
                   lister: ShardLister | None = None) -> tuple[list[Found], set[str], int]:
    """Problems of the shards layout's rows, the shard paths they reference and how many members they name.

    A member whose shard is not listed, or whose bytes would end past the shard's listed size, is a
    ``missing_member``; with ``opener`` (deep), a member that moved, was resized or has other bytes is a
    ``member_mismatch`` naming the member (``<key>.<field>``) and the item. Without ``opener``, ``lister``
    (a shard's member listing, read from its headers) catches a member absent from its tar
    (``missing_member``) or at another offset or size (``member_mismatch``), but not other bytes."""
    by_shard, found = _members(rows)
    for shard in sorted(by_shard):
        size = listing.get(shard)
        for item_id, m in by_shard[shard]:
            if size is None:
                found.append(("missing_member", item_id, f"{m.name}: shard {shard} does not exist", shard))
            elif m.offset + m.size > size:
                found.append(("missing_member", item_id, f"{m.name}: ends at {m.offset + m.size}, shard {shard} "
                              f"is {size} bytes", shard))
        if (opener is None and lister is None) or size is None:
            continue
        owner = {m.name: item_id for item_id, m in by_shard[shard]}
        expected = [MemberRecord(m.name, m.name.partition(".")[0], m.field, m.offset, m.size, m.sha256)
                    for _, m in by_shard[shard]]
        for line in _shard_lines(shard, expected, opener, lister):
            name = line.split(":", 1)[0]
            kind = "missing_member" if line.endswith(ABSENT_FROM_SHARD) else "member_mismatch"
            found.append((kind, owner.get(name, shard), f"{shard}: {line}", shard))
    return found, set(by_shard), sum(len(ms) for ms in by_shard.values())


def repeated_index_ids(seen: Mapping[str, int]) -> list[Found]:
    """Ids the Parquet index holds more than once (``seen``: id → rows read): a reader sees the item twice."""
    return [("index_mismatch", i, f"in the Parquet index {n} times", "data/index")
            for i, n in sorted(seen.items()) if n > 1]


def index_id_problems(jsonl_ids: set[str], parquet_ids: set[str]) -> list[Found]:
    """Ids the Parquet index and the JSONL rows disagree on (each is derived in the same step)."""
    out: list[Found] = [("index_mismatch", i, "in the JSONL rows, not in the Parquet index", "data/index")
                        for i in sorted(jsonl_ids - parquet_ids)]
    out += [("index_mismatch", i, "in the Parquet index, not in the JSONL rows", "data/index")
            for i in sorted(parquet_ids - jsonl_ids)]
    return out


def index_field_problems(rows: Mapping[str, IndexRow], shown: Mapping[str, Mapping[str, str]]) -> list[Found]:
    """Rows whose share fields the Parquet index (``shown``: id → fields) shows otherwise than the JSONL
    row (both are written in the same step)."""
    out: list[Found] = []
    for item_id, want in sorted(stale_fields(shown, rows).items()):
        names = ", ".join(n for n in want if shown[item_id].get(n, "") != want[n])
        out.append(("index_mismatch", item_id, f"the Parquet index shows other {names} than its row", "data/index"))
    return out
