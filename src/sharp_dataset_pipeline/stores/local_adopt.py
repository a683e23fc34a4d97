"""A local copy of the predecessor's dataset (``unsplash/<id>/<id>.*`` + its ``data/train.jsonl``)
taken into a local store's ledger, so ``migrate --to shards`` can move it like any files dataset.

The predecessor's index sits at our index path, where the local store's compaction would write its
own index: it must never be clobbered nor lost. So, in this order (each step safe to repeat after a
kill -9): its bytes are copied to ``.coord/migrate/predecessor-train.jsonl``; its rows, read as
files-layout rows (``publish.predecessor_index``), are written as a new index shard and recorded in
ONE ledger transaction (the shard file in place before the commit, as a publish does); then the
file at the index path goes. A rerun that finds the copy and every one of its ids in the ledger
only finishes the last step.
"""

from __future__ import annotations

import logging
import posixpath
import secrets
import sqlite3
from pathlib import Path

from ..errors import StoreError
from ..fsio import atomic_write
from ..publish import layout
from ..publish.index import row_to_json
from ..publish.predecessor_index import parse_predecessor_index
from ..records import IndexRow
from . import local_schema as sql
from .local_ledger import connect_ledger

log = logging.getLogger(__name__)

COPY_PATH = f"{layout.COORD_DIR}/migrate/predecessor-train.jsonl"
ADOPT_CLIENT = "predecessor"


def adopt_predecessor_index(root: Path, index_path: str, now: float) -> int:
    """Take the predecessor's index at ``root / index_path`` into the ledger (see the module
    docstring); returns the rows recorded now (0 when an earlier, interrupted call had)."""
    index = root / index_path
    raw = index.read_bytes()
    copy = root / COPY_PATH
    if not copy.is_file():
        atomic_write(copy, raw)
    elif copy.read_bytes() != raw:
        raise StoreError(f"{COPY_PATH} holds another predecessor index than {index_path}: resolve it by hand")
    rows = parse_predecessor_index(raw)
    conn = connect_ledger(root)
    try:
        with sql.write_tx(conn):
            known = sql.published_models(conn, [r.id for r in rows])
            new = [r for r in rows if r.id not in known]
            if new:
                _record(root, index_path, conn, new, now)
    finally:
        conn.close()
    index.unlink()  # its rows are in the ledger (and its bytes in the copy)
    log.info("took %d rows of the predecessor's %s into the ledger (its bytes kept at %s)", len(new),
             index_path, COPY_PATH)
    return len(new)


def _record(root: Path, index_path: str, conn: sqlite3.Connection, rows: list[IndexRow], now: float) -> None:
    shard = posixpath.basename(layout.shard_path(index_path, ADOPT_CLIENT, now, secrets.token_hex(6)))
    lines = sorted((r.id, r.unit, r.source, row_to_json(r), shard, now, ADOPT_CLIENT, r.predictor, r.model_version)
                   for r in rows)
    # Written before the commit, as a publish does: a reader never sees fewer rows than the ledger.
    atomic_write((root / index_path).parent / shard, "".join(t[3] + "\n" for t in lines).encode("utf-8"))
    sql.insert_items(conn, lines, shard, ADOPT_CLIENT, now)
