"""Late share results (``share --missing``) recorded on a local store's published rows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..publish import layout
from ..publish.gsplat_client import SHARE_FIELDS
from ..publish.index import row_from_json, row_to_json
from . import local_schema as sql

if TYPE_CHECKING:
    from .local import LocalStore


def record_local_share_fields(root: Path, updates: dict[str, dict[str, str]]) -> list[str]:
    """Record share fields on published rows of the local store at ``root``, in ONE write transaction
    of the ledger (the authority); returns the ids found. The index files showing those rows are noted
    for a rewrite in the same transaction and brought in line by ``LocalStore.apply_index_rewrites()``
    (or, after a crash, by the next ``open()``), so many updates cost one rewrite of each file.
    """
    for fields in updates.values():
        unknown = set(fields) - set(SHARE_FIELDS)
        if unknown:
            raise ValueError(f"only share fields may be updated this way, not {sorted(unknown)}")
    found_ids: list[str] = []
    shards: set[str] = set()
    conn = sql.connect(Path(root) / layout.ledger_path())
    try:
        with sql.write_tx(conn):
            for item_id, fields in updates.items():
                found = conn.execute("SELECT row, shard FROM items WHERE id = ?", (item_id,)).fetchone()
                if found is None:
                    continue
                row = row_from_json(found[0])
                for name, value in fields.items():
                    setattr(row, name, str(value))
                conn.execute("UPDATE items SET row = ? WHERE id = ?", (row_to_json(row), item_id))
                found_ids.append(item_id)
                shards.add(found[1])
            sql.note_rewrites(conn, sorted(shards))
    finally:
        conn.close()
    return found_ids


def update_local_share_fields(store: LocalStore, item_id: str, fields: dict[str, str]) -> bool:
    """Record one row's share fields and rewrite its index file now; False if the id is not published.
    (``share --missing`` records many rows with one rewrite per index file.)"""
    found = record_local_share_fields(store.root, {item_id: fields})
    store.apply_index_rewrites()
    return bool(found)
