"""A manifest file (CSV, TSV or JSON Lines) as a source: one photo per row, the row number as offset.

``location`` is a local path or an http(s) URL. A URL is fetched with retries, either into
``cache_dir`` (reused on the next run, so a restart reads the very same rows) or into memory.
The format comes from the extension (``.csv``, ``.tsv``/``.tsv000``, ``.jsonl``/``.ndjson``), else
is sniffed from the first bytes.

Columns (names compared lower-case):

- URL: ``url``, ``image_url`` or ``photo_image_url``: http(s), or ``file:///path`` for a photo on
  this machine (read like a folder's file; a ``file:`` URL naming another host is skipped as
  ``remote_file_url``). A row without such a URL is skipped (``no_url``) but keeps its row number,
  so offsets never shift.
- Repeated ids: the first row with an id wins; a later one is skipped as ``duplicate_row`` (the
  same row again) or ``duplicate_id`` (other content), logged with both row numbers. A row naming
  an earlier row's URL (or file) under another id is skipped as ``duplicate_url``: the same photo.
- id: ``id`` or ``photo_id``. Ids are used in file and repository paths, so one that is not
  ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}`` is replaced by a hash of itself. A row without an id gets
  the first 16 hex digits of the SHA-256 of its URL: stable when rows are inserted or reordered,
  and the same photo gets the same id in two manifests.
- attribution, stored in ``item.meta`` under IndexRow field names: the generic columns
  (``license``, ``user_name``, ``page_url``, ...) as they are, and Unsplash Lite's ``photos.tsv``
  columns mapped (``photo_url`` -> ``page_url``/``unsplash_url``, ``photographer_username`` ->
  ``user_username``, first + last name -> ``user_name``, ``photo_description`` -> ``description``,
  ``ai_description`` -> ``alt_description``, ``photo_submitted_at`` -> ``created_at``).
- focal hint: ``focal_mm35`` (35 mm-equivalent) or Lite's ``exif_focal_length`` (real mm, phone rule).
- quoting: CSV/TSV fields may be quoted (Unsplash's files are); a field that opens a quote it never
  closes, so that a later line with a URL in the URL column is inside it, makes its row read again
  as plain text (warned once), and reading goes on at the next line.

The file is scanned once to count rows and remember where each unit starts, so reading a unit seeks
straight to it instead of re-parsing everything before it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import httpx

from ..errors import ConfigError, PermanentError
from ..fetch.download import download
from ..fetch.image import mm35_from_focal_mm
from ..net import call_with_retries, make_client, raise_for_status
from ..records import Item, SkippedInput, Unit
from ..redact import strip_url
from .base import SourceHooks, unit_bounds, unit_key

logger = logging.getLogger(__name__)

URL_COLUMNS = ("url", "image_url", "photo_image_url")
ID_COLUMNS = ("id", "photo_id")
GENERIC_META = ("license", "user_name", "user_username", "user_url", "page_url", "unsplash_url",
                "description", "alt_description", "tags", "topics", "color", "blur_hash", "created_at")
UNSPLASH_LITE_META = {"photo_url": "page_url", "photographer_username": "user_username",
                      "photo_description": "description", "ai_description": "alt_description",
                      "photo_submitted_at": "created_at"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ID_HEX_CHARS = 16
LOCATION_HASH_CHARS = 12
DEFAULT_MAX_MANIFEST_BYTES = 4 << 30


class ManifestSource(SourceHooks):
    """Rows of a CSV / TSV / JSONL manifest as items, cut into units of ``range_size`` rows."""

    name = "manifest"

    def __init__(
        self,
        location: str,
        range_size: int = 300,
        client: httpx.Client | None = None,
        *,
        cache_dir: Path | None = None,
        attempts: int = 4,
        retry_base_s: float = 0.5,
        max_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
    ) -> None:
        if range_size < 1:
            raise ValueError("range_size must be >= 1")
        self.location = str(location)
        self.range_size = range_size
        self._client = client
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._attempts = attempts
        self._retry_base_s = retry_base_s
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256(self.location.encode("utf-8")).hexdigest()[:LOCATION_HASH_CHARS]
        self._path: Path | None = None
        self._data: bytes | None = None
        self._format = ""
        self._header: list[str] = []
        self._count = -1
        self._unit_pos: list[int] = []
        self._skipped: Counter[str] = Counter()
        # Rows whose id an earlier row already has (the first row wins), found by the one full scan
        # so every unit agrees whichever is read first.
        self._repeats: set[int] = set()
        self._repeat_of: dict[int, SkippedInput] = {}  # what each repeated row repeats (for the skip hook)
        self._skip_hook: Callable[[SkippedInput], None] = lambda skipped: None
        self._literal_rows: set[int] = set()  # rows with an unclosed quote, read as plain text (warned once)

    @property
    def format(self) -> str:
        """``csv``, ``tsv`` or ``jsonl`` (loads the manifest if needed)."""
        self._scan()
        return self._format

    def units(self) -> Iterator[Unit]:
        """The units covering every row, in order. The last one ends at the last row: rows appended to the
        manifest later make it a new unit (``…/000000-000007`` after ``…/000000-000004``) that a later run
        reads, its published rows skipped by id, instead of a unit already done that hides them."""
        self._scan()
        for index in range(math.ceil(self._count / self.range_size)):
            start, stop = unit_bounds(index, self.range_size)
            yield Unit(key=self._unit_key(start, stop), start=start, stop=min(stop, self._count))

    def _unit_key(self, start: int, stop: int) -> str:
        return unit_key(f"manifest/{self._hash}", start, min(stop, self._count))

    def items(self, unit: Unit) -> Iterator[Item]:
        """The unit's rows that carry an image URL, in row order."""
        self._scan()
        index = unit.start // self.range_size
        if unit.start >= self._count or index >= len(self._unit_pos):
            return
        offset = index * self.range_size
        with self._open() as fh:
            fh.seek(self._unit_pos[index])
            for _, record in self._records(fh):
                if offset >= min(unit.stop, self._count):
                    return
                if offset >= unit.start and offset in self._repeat_of:
                    self._skip_hook(dataclasses.replace(self._repeat_of[offset], unit=unit.key))
                elif offset >= unit.start and record is not None and offset not in self._repeats:
                    item, _reason = row_to_item(record, offset=offset, unit=unit.key, source=self.name)
                    if item is not None:
                        yield item
                offset += 1

    def total_items(self) -> int | None:
        """The manifest's rows, once ``units()`` has scanned it (read from any thread)."""
        return self._count if self._count >= 0 else None

    def skipped_counts(self) -> dict[str, int]:
        """Rows skipped by reason (``no_url``, ``bad_row``, ``remote_file_url``, ``duplicate_id``,
        ``duplicate_row``, ``duplicate_url``), counted over the whole manifest."""
        self._scan()
        return dict(self._skipped)

    def set_wait_hook(self, hook: Callable[[], None]) -> None:
        """Never used: reading a local listing or file never waits for long."""

    def set_skip_hook(self, hook: Callable[[SkippedInput], None]) -> None:
        """``hook`` hears of each ``duplicate_id`` / ``duplicate_row`` / ``duplicate_url`` row as
        ``items`` reaches it."""
        self._skip_hook = hook

    # Loading and scanning.

    def _scan(self) -> None:
        if self._count >= 0:
            return
        self._load()
        count = 0
        first_rows: dict[str, tuple[int, int, str]] = {}
        first_locations: dict[str, tuple[int, str]] = {}  # URL or path -> (first row, its id)
        with self._open() as fh:
            records = self._records(fh, read_header=self._format != "jsonl")
            for start, record in records:
                if count % self.range_size == 0:
                    self._unit_pos.append(start)
                if record is None:
                    self._skipped["bad_row"] += 1
                else:
                    item, reason = row_to_item(record, offset=count, unit="", source=self.name)
                    if reason:
                        self._skipped[reason] += 1
                    elif item is not None and self._note_id(item, count, record, first_rows):
                        self._note_location(item, count, first_locations)
                count += 1
        self._count = count
        logger.info("manifest %s: %d rows (%s), skipped %s", strip_url(self.location), count, self._format,
                    dict(self._skipped))
        if count and self._skipped["no_url"] == count:
            columns = ", ".join(self._header) if self._header else "JSON keys"
            logger.warning("manifest %s: no row has an http(s) or file: URL in a URL column (%s); its columns: %s",
                           strip_url(self.location), ", ".join(URL_COLUMNS), columns)

    def _note_id(self, item: Item, offset: int, record: dict, first_rows: dict[str, tuple[int, int, str]]) -> bool:
        """Remember the first row of each id; a later row with the same id is skipped (it would
        share the first one's files and ledger entry). True when the row's id is new."""
        # A within-run fingerprint only tells duplicate_row from duplicate_id, so Python's hash does.
        try:
            digest = hash(tuple(record.items()))  # CSV/TSV rows: strings in header order
        except TypeError:  # a JSON line with list or object values
            digest = hash(repr(sorted(record.items())))
        item_id = item.id
        first = first_rows.get(item_id)
        if first is None:
            first_rows[item_id] = (offset, digest, item.origin)
            return True
        reason = "duplicate_row" if first[1] == digest else "duplicate_id"
        self._skip_repeat(item, offset, reason, first[0], first[2],
                          f"row {offset + 1} repeats the id of row {first[0] + 1}")
        return False

    def _note_location(self, item: Item, offset: int, first_locations: dict[str, tuple[int, str]]) -> None:
        """A later row naming the same URL (or file) under another id is skipped as ``duplicate_url``:
        it is the same photo, and would be published twice under two ids."""
        location = item.url or item.path
        first = first_locations.get(location)
        if first is None:
            first_locations[location] = (offset, item.id)
            return
        self._skip_repeat(item, offset, "duplicate_url", first[0], item.origin,
                          f"row {offset + 1} repeats the URL of row {first[0] + 1} (id {first[1]})")

    def _skip_repeat(self, item: Item, offset: int, reason: str, first: int, duplicate_of: str, detail: str) -> None:
        self._repeats.add(offset)
        self._skipped[reason] += 1
        # Row numbers count data rows from 1, as a spreadsheet shows them under the header.
        logger.warning("manifest row %d skipped: %s of row %d (id %s)", offset + 1, reason, first + 1, item.id)
        # Its unit is named when ``items`` reaches it: the last unit's key needs the final row count.
        self._repeat_of[offset] = SkippedInput(item.id, "", reason, item.origin, duplicate_of, detail=detail)

    def _load(self) -> None:
        if _is_url(self.location):
            self._fetch_remote()
        else:
            self._path = local_manifest_path(self.location)
            if self._path is None or not self._path.is_file():
                raise ConfigError(f"manifest {self.location} is not a file")
        with self._open() as fh:
            head = fh.read(8192)
        self._format = detect_format(urlsplit(self.location).path if _is_url(self.location)
                                     else self.location, head)

    def _fetch_remote(self) -> None:
        client = self._client or make_client()
        try:
            if self._cache_dir is not None:
                suffix = Path(urlsplit(self.location).path).suffix.lower()
                path = self._cache_dir / f"manifest-{self._hash}{suffix}"
                if not path.exists():
                    download(self.location, path, client, max_bytes=self._max_bytes, attempts=self._attempts,
                             base_s=self._retry_base_s, service="manifest")
                self._path = path
            else:
                self._data = call_with_retries(
                    lambda: self._get_bytes(client), attempts=self._attempts, base_s=self._retry_base_s,
                    max_s=30.0,
                )
        finally:
            if self._client is None:
                client.close()

    def _get_bytes(self, client: httpx.Client) -> bytes:
        resp = client.get(self.location)
        raise_for_status(resp, service="manifest")
        if len(resp.content) > self._max_bytes:
            raise PermanentError(f"manifest is over {self._max_bytes} bytes", reason="too_large")
        return resp.content

    def _open(self) -> IO[bytes]:
        if self._data is not None:
            return io.BytesIO(self._data)
        assert self._path is not None
        return open(self._path, "rb")

    def _records(self, fh: IO[bytes], read_header: bool = False) -> Iterator[tuple[int, dict | None]]:
        """``(byte position, row mapping or None if malformed)`` per non-blank record from ``fh``'s position."""
        lines = _Lines(fh)
        if self._format == "jsonl":
            yield from _json_records(lines)
            return
        delimiter = "\t" if self._format == "tsv" else ","
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            if read_header:
                self._header = [h.strip().lower() for h in next(reader, [])]
            while True:
                start = lines.pos
                row = next(reader, None)
                if row is None:
                    return
                if self._joins_rows(row, delimiter):
                    row = self._literal_line(lines, start, delimiter)
                    reader = csv.reader(lines, delimiter=delimiter)
                if not any(cell.strip() for cell in row):
                    continue
                yield start, dict(zip(self._header, row, strict=False))  # ragged rows allowed
        except csv.Error as exc:
            raise ConfigError(f"manifest {strip_url(self.location)}: unreadable near byte {lines.pos}: {exc}") from exc


    def _joins_rows(self, row: list[str], delimiter: str) -> bool:
        """True when a quoted field ran over lines that are rows of their own (a URL in the URL column).

        A field that opens with a quote it never closes (``"5 tall``) would otherwise take every row up
        to the next quote into itself, and those photos would be lost without a word."""
        for cell in row:
            for line in cell.split("\n")[1:]:
                fields = next(csv.reader([line], delimiter=delimiter, quoting=csv.QUOTE_NONE), [])
                if row_location(dict(zip(self._header, fields, strict=False))):
                    return True
        return False

    def _literal_line(self, lines: _Lines, start: int, delimiter: str) -> list[str]:
        """The physical line at ``start`` read on its own, quotes as plain characters; ``lines`` goes on
        from the next line."""
        raw = lines.read_line_at(start)
        if start not in self._literal_rows:
            self._literal_rows.add(start)
            logger.warning("manifest %s: the row at byte %d opens a quote it never closes; read as plain text so "
                           "the rows after it are not joined into it", strip_url(self.location), start)
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        return next(csv.reader([text], delimiter=delimiter, quoting=csv.QUOTE_NONE), [])


class _Lines:
    """Binary lines decoded as UTF-8, counting the bytes consumed (for seekable unit starts)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.pos = fh.tell()

    def read_line_at(self, start: int) -> bytes:
        """The raw line at byte ``start``; iteration then goes on from the line after it."""
        self._fh.seek(start)
        raw = self._fh.readline()
        self.pos = start + len(raw)
        return raw

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self._fh.readline()
        if not raw:
            raise StopIteration
        first = self.pos == 0
        self.pos += len(raw)
        text = raw.decode("utf-8", "replace")
        return text.lstrip("\ufeff") if first else text


def _json_records(lines: _Lines) -> Iterator[tuple[int, dict | None]]:
    while True:
        start = lines.pos
        line = next(lines, None)
        if line is None:
            return
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        yield start, {str(k).strip().lower(): v for k, v in record.items()} if isinstance(record, dict) else None


def _is_url(location: str) -> bool:
    return location.lower().startswith(("http://", "https://"))


def detect_format(name: str, head: bytes) -> str:
    """``csv``, ``tsv`` or ``jsonl`` from a file name (``.tsv000`` counts as ``.tsv``), else from its first bytes."""
    suffix = re.sub(r"\d+$", "", Path(name).suffix.lower())
    by_suffix = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    text = head.decode("utf-8", "replace").lstrip("\ufeff \r\n\t")
    if text.startswith("{"):
        return "jsonl"
    first_line = text.split("\n", 1)[0]
    return "tsv" if "\t" in first_line else "csv"


def row_location(row: Mapping[str, Any]) -> str:
    """The row's photo URL (``http(s)://`` or ``file:``) from its first non-empty URL column, else ``''``."""
    url = next((_text(row.get(c)) for c in URL_COLUMNS if _text(row.get(c))), "")
    return url if url.lower().startswith(("http://", "https://", "file:")) else ""


def row_to_item(row: Mapping[str, Any], *, offset: int, unit: str, source: str) -> tuple[Item | None, str]:
    """One manifest row as an Item, or ``(None, reason)`` when it cannot be one (pure)."""
    url = row_location(row)
    path = ""
    if url.lower().startswith("file:"):
        path = file_url_path(url)
        if not path:
            return None, "remote_file_url"
    elif not url.lower().startswith(("http://", "https://")):
        return None, "no_url"
    raw_id = next((_text(row.get(c)) for c in ID_COLUMNS if _text(row.get(c))), "")
    if raw_id and _SAFE_ID.match(raw_id):
        item_id = raw_id
    else:
        item_id = hashlib.sha256((raw_id or url).encode("utf-8")).hexdigest()[:ID_HEX_CHARS]
    meta = _meta(row)
    if path:
        meta["source_path"] = path
    return Item(id=item_id, source=source, unit=unit, offset=offset, url="" if path else url, path=path,
                focal_hint_mm35=_focal_hint(row), meta=meta), ""


def local_manifest_path(location: str) -> Path | None:
    """The file a manifest location names on this machine (a path or a ``file:`` URL); None for a download."""
    if _is_url(location):
        return None
    return Path(file_url_path(location) if location.lower().startswith("file:") else location)


def file_url_path(url: str) -> str:
    """The local path of a ``file:`` URL (``file:///a/b.jpg``, ``file://localhost/a/b.jpg``), or ""
    when it names another host: this machine cannot read that, so the row is skipped."""
    parts = urlsplit(url)
    if parts.netloc.lower() not in ("", "localhost") or not parts.path:
        return ""
    return url2pathname(unquote(parts.path))


def _meta(row: Mapping[str, Any]) -> dict[str, str]:
    meta = {name: _text(row.get(name)) for name in GENERIC_META if _text(row.get(name))}
    for column, field_name in UNSPLASH_LITE_META.items():
        value = _text(row.get(column))
        if value and field_name not in meta:
            meta[field_name] = value
    full_name = " ".join(p for p in (_text(row.get("photographer_first_name")),
                                     _text(row.get("photographer_last_name"))) if p)
    if full_name and "user_name" not in meta:
        meta["user_name"] = full_name
    page = meta.get("page_url", "")
    if urlsplit(page).hostname in ("unsplash.com", "www.unsplash.com"):
        meta.setdefault("unsplash_url", page)
        if meta.get("user_username"):
            meta.setdefault("user_url", f"https://unsplash.com/@{meta['user_username']}")
    return meta


def _focal_hint(row: Mapping[str, Any]) -> float:
    direct = _number(row.get("focal_mm35"))
    if direct:
        return direct
    real = _number(row.get("exif_focal_length"))
    return mm35_from_focal_mm(real)[0] if real else 0.0


def _number(value: Any) -> float:
    try:
        number = float(_text(value))
    except ValueError:
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    if isinstance(value, (list, tuple)):
        # A list (JSONL tags) is kept as the index's comma-joined form: a comma inside an entry would split
        # it into two, so it becomes a space (as for Unsplash's tag titles).
        return ",".join(" ".join(_text(v).replace(",", " ").split()) for v in value if _text(v))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value).strip()
