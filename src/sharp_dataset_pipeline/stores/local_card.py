"""The local store's dataset card (``README.md``) and the index snapshot name ``datasets`` caches by
(``SNAPSHOT_YAML``): written on ``open``, refreshed when published rows bring a source or predictor
the card does not list, and after compaction or a removal.
"""
from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..fsio import atomic_write
from ..publish import layout
from ..publish.card import CardFacts, card_facts, card_is_stale, render_card, render_snapshot_yaml
from ..publish.layout_choice import FILES, SHARDS
from ..publish.shard_layout import PLY_DIR
from ..records import IndexRow

__all__ = ["SNAPSHOT_YAML", "LocalCard"]

log = logging.getLogger(__name__)

SNAPSHOT_YAML = layout.DATASETS_YAML_PATH  # read by ``datasets`` over the card: see ``render_snapshot_yaml``


class LocalCard:
    """The card and the datasets snapshot of ``LocalStore``."""

    root: Path
    index_path: str
    layout: str
    _card: CardFacts | None
    _card_title: str
    _card_sources: list[str]
    _conn: Callable[[], sqlite3.Connection]

    def _write_snapshot(self, name: str) -> None:
        """Name the index snapshot for ``datasets``' cache: every change of the rows writes a new one."""
        # Both layouts' index is Parquet here (the files layout's twins): the snapshot names the index config.
        yaml_text = render_snapshot_yaml(name, layout=SHARDS, facts=self._card)
        atomic_write(self.root / SNAPSHOT_YAML, yaml_text.encode("utf-8"))

    def write_card(self, title: str | None = None, sources: list[str] | None = None) -> None:
        """(Re)write README.md: the dataset card, listing the sources and predictors seen so far."""
        conn = self._conn()
        seen = [r[0] for r in conn.execute("SELECT DISTINCT source FROM items")]
        predictors = [r[0] for r in conn.execute("SELECT DISTINCT json_extract(row, '$.predictor') FROM items")
                      if isinstance(r[0], str) and r[0]]
        splat_fields, ply_fields = self._member_fields(conn)
        card = render_card(
            title=title or self._card_title,
            sources=sorted(set(seen) | set(sources or self._card_sources)),
            predictors=predictors,
            index_glob=layout.index_glob(self.index_path),
            layout=self.layout or FILES,
            ply_config=self.layout == SHARDS and (self.root / PLY_DIR).is_dir(),
            typed_index=True,  # the files layout's JSONL index has typed twins (``local_files_index``)
            splat_fields=splat_fields,
            ply_fields=ply_fields,
        )
        path = self.root / layout.README_PATH
        # Same bytes: leave the file (and its inode) alone, so readers and invariant 2 see no rewrite.
        if not path.is_file() or path.read_bytes() != card.encode("utf-8"):
            atomic_write(path, card.encode("utf-8"))
        self._card = card_facts(card)
        # Called after maintenance that changes rows (``remove``): readers' caches must not outlive it.
        self._write_snapshot(f"card-{secrets.token_hex(6)}")

    @staticmethod
    def _member_fields(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
        """The tar member fields of every published row: ``(splats, ply)`` (none in the files layout)."""
        splat: set[str] = set()
        ply: set[str] = set()
        query = ("SELECT DISTINCT json_extract(m.value, '$.field'), json_extract(m.value, '$.shard') LIKE ?"
                 " FROM items, json_each(CASE WHEN json_valid(json_extract(items.row, '$.members'))"
                 " THEN json_extract(items.row, '$.members') ELSE '[]' END) AS m")
        for field_name, in_ply in conn.execute(query, (PLY_DIR + "/%",)):
            if isinstance(field_name, str) and field_name:
                (ply if in_ply else splat).add(field_name)
        return splat, ply

    def _read_card_facts(self) -> CardFacts | None:
        try:
            return card_facts((self.root / layout.README_PATH).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None

    def _refresh_card(self, rows: list[IndexRow] | None = None) -> None:
        """Rewrite a generated card after compaction (``rows`` None) or when published ``rows`` bring
        a source or predictor it does not list; a failed write is retried by the next one."""
        facts = self._read_card_facts() if rows is None else self._card
        if rows is not None and card_is_stale(facts, rows):
            # Another process sharing the store may have listed them already: trust the card on disk.
            facts = self._card = self._read_card_facts()
        if not card_is_stale(facts, rows):
            return
        try:
            self.write_card()
        except OSError as exc:
            log.warning("dataset card not refreshed (%s); the next publish or compaction retries", exc)
