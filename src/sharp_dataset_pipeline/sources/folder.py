"""A folder of photos as a source: sorted relative paths, ids from file content.

Enumeration: every non-hidden file under ``root`` (recursively, hidden folders skipped, folder symlinks
not followed but counted as ``folder_symlink``, a folder that cannot be listed counted ``unreadable``)
whose extension Pillow can open, sorted by relative POSIX path. The listing fixes the offsets; its
hash (relative paths + sizes) goes into the unit keys, so adding a photo yields new unit keys, while
ids (the first 16 hex digits of the content's SHA-256) stay put: done items are skipped by id and
only new photos get published. A renamed file keeps its id.

Files are hashed lazily, unit by unit. A file whose content equals an earlier file's (an earlier
relative path) is skipped as ``duplicate_content``; only same-size earlier files are hashed to find
out, so the answer is the same whichever unit a machine reads first.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile

from ..errors import ConfigError
from ..records import Item, SkippedInput, Unit
from .base import SourceHooks, unit_bounds, unit_key

logger = logging.getLogger(__name__)

ID_HEX_CHARS = 16
LISTING_HASH_CHARS = 12
_HASH_CHUNK = 1 << 20
# Pillow identifies these but never decodes their pixels (MPEG video is only sniffed).
_UNDECODABLE_FORMATS = frozenset({"MPEG"})


@dataclass(frozen=True)
class _Entry:
    rel: str
    size: int


def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with the dot) of every format Pillow can actually open here."""
    exts = set()
    for ext, fmt in Image.registered_extensions().items():
        opener = Image.OPEN.get(fmt)
        # Stub plugins (BUFR, GRIB, HDF5, ...) recognise a file but cannot decode it.
        factory = opener[0] if opener else None
        if factory is None or fmt in _UNDECODABLE_FORMATS:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        exts.add(ext.lower())
    return frozenset(exts)


class FolderSource(SourceHooks):
    """Photos under ``root``, cut into units of ``range_size`` files (see the module docstring)."""

    name = "folder"

    def __init__(self, root: Path, range_size: int = 300, *, license: str = "") -> None:
        if range_size < 1:
            raise ValueError("range_size must be >= 1")
        self.root = Path(root).resolve()
        self.range_size = range_size
        self.license = license  # recorded in every row; the user's own photos keep their own licence
        self._entries: list[_Entry] | None = None
        self._by_size: dict[int, list[int]] = {}
        self._listing_hash = ""
        self._skipped: Counter[str] = Counter()
        self._digests: dict[int, str] = {}
        self._duplicates: set[int] = set()
        self._unreadable: set[int] = set()
        self._skip_hook: Callable[[SkippedInput], None] = lambda skipped: None

    def units(self) -> Iterator[Unit]:
        """The units of the current listing, in order (lists the folder once; reads no file)."""
        entries = self._listing()
        prefix = f"folder/{self._listing_hash}"
        for index in range(math.ceil(len(entries) / self.range_size)):
            start, stop = unit_bounds(index, self.range_size)
            yield Unit(key=unit_key(prefix, start, stop), start=start, stop=stop)

    def items(self, unit: Unit) -> Iterator[Item]:
        """The unit's photos in listing order, each hashed when reached; duplicates and vanished files skipped."""
        entries = self._listing()
        for offset in range(unit.start, min(unit.stop, len(entries))):
            digest = self._digest(offset)
            if digest is None:
                continue
            if self._is_duplicate(offset, digest, unit.key):
                continue
            entry = entries[offset]
            yield Item(
                id=digest[:ID_HEX_CHARS],
                source=self.name,
                unit=unit.key,
                offset=offset,
                path=str(self.root / entry.rel),
                ext_hint=Path(entry.rel).suffix.lower().lstrip("."),
                meta={"source_path": display_path(entry.rel), "license": self.license},
            )

    def total_items(self) -> int | None:
        """The photos in the listing, once ``units()`` has listed the folder (read from any thread)."""
        entries = self._entries
        return len(entries) if entries is not None else None

    def skipped_counts(self) -> dict[str, int]:
        """Skipped inputs by reason: ``hidden``, ``not_an_image_extension``, ``not_a_regular_file``,
        ``duplicate_content``, ``unreadable``, ``folder_symlink``."""
        self._listing()
        counts = dict(self._skipped)
        if self._duplicates:
            counts["duplicate_content"] = len(self._duplicates)
        if self._unreadable:
            counts["unreadable"] = counts.get("unreadable", 0) + len(self._unreadable)
        return counts

    def set_wait_hook(self, hook: Callable[[], None]) -> None:
        """Never used: reading a local listing or file never waits for long."""

    def set_skip_hook(self, hook: Callable[[SkippedInput], None]) -> None:
        """``hook`` hears of each ``duplicate_content`` file as ``items`` reaches it."""
        self._skip_hook = hook

    def _listing(self) -> list[_Entry]:
        if self._entries is None:
            self._entries = self._walk()
            for offset, entry in enumerate(self._entries):
                self._by_size.setdefault(entry.size, []).append(offset)
            lines = "\n".join(f"{e.rel}\t{e.size}" for e in self._entries)
            # os.fsencode gives back the name's own bytes, also for a name that is not valid UTF-8.
            self._listing_hash = hashlib.sha256(os.fsencode(lines)).hexdigest()[:LISTING_HASH_CHARS]
        return self._entries

    def _walk(self) -> list[_Entry]:
        if not self.root.is_dir():
            raise ConfigError(f"folder source: {self.root} is not a folder")
        exts = image_extensions()
        entries = []
        for dirpath, dirnames, filenames in os.walk(self.root, onerror=self._unreadable_folder):
            hidden_dirs = [d for d in dirnames if d.startswith(".")]
            if hidden_dirs:
                self._skipped["hidden"] += len(hidden_dirs)  # a hidden folder counts once, unread
            # os.walk lists a folder symlink but does not enter it (a loop could never end): said, not silent.
            linked = [d for d in dirnames if not d.startswith(".") and os.path.islink(os.path.join(dirpath, d))]
            for d in linked:
                logger.warning("skipping %s: a folder symlink (not followed)", display_path(os.path.join(dirpath, d)))
            if linked:
                self._skipped["folder_symlink"] += len(linked)
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in linked]
            for filename in filenames:
                entry = self._entry(Path(dirpath) / filename, exts)
                if entry is not None:
                    entries.append(entry)
        entries.sort(key=lambda e: e.rel)
        return entries

    def _unreadable_folder(self, exc: OSError) -> None:
        """A folder the walk cannot list (no permission): counted and said, its photos not published."""
        logger.warning("skipping folder %s: %s", display_path(str(exc.filename or "")), exc.strerror or exc)
        self._skipped["unreadable"] += 1

    def _entry(self, full: Path, exts: frozenset[str]) -> _Entry | None:
        """The listing entry of one file, or None (counted under the reason it was skipped for)."""
        if full.name.startswith("."):
            self._skipped["hidden"] += 1
            return None
        if full.suffix.lower() not in exts:
            self._skipped["not_an_image_extension"] += 1
            return None
        try:
            info = full.stat()
        except OSError as exc:  # a dangling symlink or a file removed mid-walk
            logger.warning("skipping %s: %s", display_path(str(full)), exc)
            self._skipped["unreadable"] += 1
            return None
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or device named *.jpg would block (or never end) when read.
            logger.warning("skipping %s: not a regular file", display_path(str(full)))
            self._skipped["not_a_regular_file"] += 1
            return None
        return _Entry(full.relative_to(self.root).as_posix(), info.st_size)

    def _digest(self, offset: int) -> str | None:
        if offset in self._digests:
            return self._digests[offset]
        if offset in self._unreadable:
            return None
        path = self.root / self._listing()[offset].rel
        hasher = hashlib.sha256()
        try:
            with _open_regular(path) as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    hasher.update(chunk)
        except OSError as exc:
            logger.warning("skipping %s: %s", display_path(str(path)), exc)
            self._unreadable.add(offset)
            return None
        self._digests[offset] = hasher.hexdigest()
        return self._digests[offset]

    def _is_duplicate(self, offset: int, digest: str, unit: str = "") -> bool:
        size = self._listing()[offset].size
        for earlier in self._by_size[size]:
            if earlier >= offset:
                break
            if self._digest(earlier) == digest:
                self._duplicates.add(offset)
                entries = self._listing()
                logger.info("skipping %s: duplicate_content of %s (item %s)", entries[offset].rel,
                            entries[earlier].rel, digest[:ID_HEX_CHARS])
                self._skip_hook(SkippedInput(digest[:ID_HEX_CHARS], unit, "duplicate_content",
                                             display_path(entries[offset].rel), display_path(entries[earlier].rel)))
                return True
        return False


def display_path(path: str) -> str:
    """``path`` fit to store and print: bytes of a name that are not valid UTF-8 become U+FFFD
    (the file itself is still read under its real name)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _open_regular(path: Path) -> BinaryIO:
    """Open for reading, refusing anything but a regular file without blocking on it: a FIFO put
    in place after the listing would otherwise hang ``open()`` until a writer appears."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        fh.close()
        raise OSError(f"{display_path(str(path))} is not a regular file")
    return fh
