"""``verify`` checks of the sharded layout (pure): rows' members against the shards they name.

Every member of a row must lie inside its shard as listed (``missing_member``); ``deep``, each shard is
read once and every member's offset, size and sha256 compared with the rows (``member_mismatch``,
through ``tar_shard.verify_shard``); the Parquet index must hold exactly the JSONL rows' ids
(``index_mismatch``). A shard no row references is an ``orphan_file`` like any other file: the shard
paths the rows name are returned as referenced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from ..errors import StoreError
from ..publish.parquet_index import ShardMember, row_members
from ..publish.tar_shard import MemberRecord, verify_shard
from ..records import IndexRow

# Opens a shard's local bytes for reading (the caller's store: the file itself or a downloaded copy).
ShardOpener = Callable[[str], BinaryIO]
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


def shard_problems(rows: dict[str, IndexRow], listing: dict[str, int],
                   opener: ShardOpener | None = None) -> tuple[list[Found], set[str]]:
    """Problems of the shards layout's rows and the shard paths they reference.

    A member whose shard is not listed, or whose bytes would end past the shard's listed size, is a
    ``missing_member``; with ``opener`` (deep), a member that moved, was resized or has other bytes is a
    ``member_mismatch`` naming the member (``<key>.<field>``) and the item."""
    by_shard, found = _members(rows)
    for shard in sorted(by_shard):
        size = listing.get(shard)
        for item_id, m in by_shard[shard]:
            if size is None:
                found.append(("missing_member", item_id, f"{m.name}: shard {shard} does not exist", shard))
            elif m.offset + m.size > size:
                found.append(("missing_member", item_id, f"{m.name}: ends at {m.offset + m.size}, shard {shard} "
                              f"is {size} bytes", shard))
        if opener is None or size is None:
            continue
        owner = {m.name: item_id for item_id, m in by_shard[shard]}
        expected = [MemberRecord(m.name, m.name.partition(".")[0], m.field, m.offset, m.size, m.sha256)
                    for _, m in by_shard[shard]]
        try:
            with opener(shard) as src:
                lines = verify_shard(src, expected)
        except OSError as exc:
            lines = [f"cannot read the shard: {exc}"]
        for line in lines:
            name = line.split(":", 1)[0]
            found.append(("member_mismatch", owner.get(name, shard), f"{shard}: {line}", shard))
    return found, set(by_shard)


def index_id_problems(jsonl_ids: set[str], parquet_ids: set[str]) -> list[Found]:
    """Ids the Parquet index and the JSONL rows disagree on (each is derived in the same step)."""
    out: list[Found] = [("index_mismatch", i, "in the JSONL rows, not in the Parquet index", "data/index")
                        for i in sorted(jsonl_ids - parquet_ids)]
    out += [("index_mismatch", i, "in the Parquet index, not in the JSONL rows", "data/index")
            for i in sorted(parquet_ids - jsonl_ids)]
    return out
