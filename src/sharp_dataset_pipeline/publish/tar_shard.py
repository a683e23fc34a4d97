"""WebDataset tar shards: build one deterministically, find and verify a member in one. Pure: bytes or
already-written local files in, a tar stream out to a file object the caller opens.

A shard is a POSIX tar (ustar, with pax headers only where ustar cannot hold a name) written by the
stdlib ``tarfile``. Every sample is ``<key>.<field>`` members, the key from ``shard_keys.encode_key``;
every item in a shard has the same fields (``datasets`` fixes the columns from the first samples and
fails on a sample that differs). Bytes are reproducible: samples sorted by key, fields by name, fixed
mtime / uid / gid / mode, no user or group names. So the same batch always gives the same tar, and
``tar_size`` can say in advance how big it will be (the planner splits batches by it).

Fields are never mesh extensions (``ply``, ``glb``, ``stl``) unless asked for: ``datasets``' WebDataset
builder decodes those as a ``Mesh`` through trimesh, which keeps only the xyz of a splat PLY. Full
PLYs go in their own shards (``shard_layout`` kind ``ply``).
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import StoreError
from .shard_keys import is_key

MESH_FIELDS = frozenset({"ply", "glb", "stl"})  # datasets 5.x: MESH_EXTENSIONS of its WebDataset builder
FIXED_MTIME = 0
_FIELD_RE = re.compile(r"^[a-z0-9]+(?:\.[a-z0-9]+)*$")  # webdataset lowercases suffixes: keep them lowercase
_FORMAT = tarfile.PAX_FORMAT
_ENCODING = "utf-8"
_CHUNK = 1 << 20
_USTAR_NAME = 100  # tarfile.LENGTH_NAME
_USTAR_MAX_SIZE = 8**11  # 11 octal digits in the ustar size field
ABSENT_FROM_SHARD = "in the index but not in the shard"  # how a problem line says a member is missing


class ShardError(StoreError):
    """A shard cannot be built from these items (bad key, missing or extra member, mesh field)."""


class MemberMismatch(StoreError):
    """A member read back from a shard is missing, in a different place, or has other bytes than recorded."""


@dataclass(frozen=True)
class ShardItem:
    """One sample: its key and ``field → content`` (bytes, or a local file read while the tar is written)."""

    key: str
    members: Mapping[str, bytes | Path]


@dataclass(frozen=True)
class MemberRecord:
    """Where one member's bytes sit in a shard, so an index row can point at it (and a ranged read can
    fetch it alone): ``offset`` is the first byte of the data, not of the header."""

    name: str
    key: str
    field: str
    offset: int
    size: int
    sha256: str


@dataclass(frozen=True)
class ShardResult:
    """A written shard: total bytes, the tar's own sha256 (the LFS oid) and every member in tar order."""

    size: int
    sha256: str
    members: tuple[MemberRecord, ...] = field(default_factory=tuple)

    def members_of(self, key: str) -> dict[str, MemberRecord]:
        """``field → record`` for one sample."""
        return {m.field: m for m in self.members if m.key == key}


def member_name(key: str, field_name: str) -> str:
    return f"{key}.{field_name}"


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _header(name: str, size: int) -> bytes:
    return _tarinfo(name, size).tobuf(_FORMAT, _ENCODING, "strict")


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def member_tar_bytes(name: str, size: int) -> int:
    """Bytes one member takes in a shard: its header (plus a pax header for a long name) and padded data."""
    if len(name) <= _USTAR_NAME and name.isascii() and size < _USTAR_MAX_SIZE:
        # What tarfile does for a name and size that fit ustar: one header block, no pax header. Planning a
        # million items calls this millions of times, and building the header costs ~10x more.
        return tarfile.BLOCKSIZE + _padded(size)
    return len(_header(name, size)) + _padded(size)


def item_tar_bytes(key: str, field_sizes: Mapping[str, int]) -> int:
    """Bytes one sample takes in a shard (without the end-of-archive blocks ``tar_size`` adds)."""
    return sum(member_tar_bytes(member_name(key, f), s) for f, s in field_sizes.items())


def finish_tar_bytes(members_bytes: int) -> int:
    """A tar's size once its members take ``members_bytes``: two zero blocks, padded to a whole record."""
    total = members_bytes + 2 * tarfile.BLOCKSIZE
    return -(-total // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def tar_size(members: Iterable[tuple[str, int]]) -> int:
    """The exact size of the shard ``write_shard`` makes from members ``(name, size)``."""
    return finish_tar_bytes(sum(member_tar_bytes(n, s) for n, s in members))


def validate_items(items: Sequence[ShardItem], *, allow_mesh: bool = False) -> tuple[str, ...]:
    """Check a shard's samples and return their common fields, sorted.

    Raises ``ShardError`` for no items, a key that ``encode_key`` cannot have made, a repeated key,
    a field name that is not lowercase ``[a-z0-9]`` parts, a mesh field (unless ``allow_mesh``), or an
    item whose fields differ from the first item's.
    """
    if not items:
        raise ShardError("a shard needs at least one item")
    fields = tuple(sorted(items[0].members))
    if not fields:
        raise ShardError(f"item {items[0].key!r} has no members")
    for name in fields:
        if not _FIELD_RE.match(name):
            raise ShardError(f"member field {name!r} must be lowercase letters/digits parts, e.g. 'spz' or 'small.ply'")
        if not allow_mesh and name.rsplit(".", 1)[-1] in MESH_FIELDS:
            raise ShardError(f"member field {name!r} would be decoded as a Mesh by datasets; put PLYs in ply shards")
    seen: set[str] = set()
    for item in items:
        if not is_key(item.key):
            raise ShardError(f"{item.key!r} is not a shard key (use shard_keys.encode_key)")
        if item.key in seen:
            raise ShardError(f"key {item.key!r} appears twice in one shard")
        seen.add(item.key)
        mine = tuple(sorted(item.members))
        if mine != fields:
            raise ShardError(f"item {item.key!r} has members {list(mine)}, the shard's items have {list(fields)}")
    return fields


class _HashingWriter:
    """Counts and hashes what goes through to ``out`` (the tar's size and LFS oid, in one pass)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.size += len(data)
        self.digest.update(data)
        return len(data)


class _HashingReader:
    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        self.digest.update(data)
        return data


def _content_size(content: bytes | Path) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


def write_shard(items: Sequence[ShardItem], out: BinaryIO, *, allow_mesh: bool = False) -> ShardResult:
    """Write ``items`` as one WebDataset tar to ``out`` (any writable binary stream; nothing is seeked).

    Samples go in key order and fields in name order whatever the input order, so a resend of a batch
    makes the same bytes. Returns the shard's size and sha256 and each member's data offset, size and
    sha256. A file member that changes size while it is read raises ``ShardError`` (``tarfile`` would
    otherwise pad or cut it silently).
    """
    fields = validate_items(items, allow_mesh=allow_mesh)
    sink = _HashingWriter(out)
    records: list[MemberRecord] = []
    pos = 0
    with tarfile.open(fileobj=sink, mode="w|", format=_FORMAT, encoding=_ENCODING) as tar:  # type: ignore[call-overload]
        for item in sorted(items, key=lambda i: i.key):
            for name in fields:
                content = item.members[name]
                size = _content_size(content)
                member = member_name(item.key, name)
                info = _tarinfo(member, size)
                header_len = len(_header(member, size))
                with (io.BytesIO(content) if isinstance(content, bytes) else content.open("rb")) as raw:
                    reader = _HashingReader(raw)
                    tar.addfile(info, reader)  # type: ignore[arg-type]
                    if raw.read(1):
                        raise ShardError(f"member {member!r} grew while it was written")
                records.append(MemberRecord(member, item.key, name, pos + header_len, size, reader.digest.hexdigest()))
                pos += header_len + _padded(size)
    if sink.size != finish_tar_bytes(pos):
        raise ShardError(f"shard came out {sink.size} bytes, expected {finish_tar_bytes(pos)} (a member changed size?)")
    return ShardResult(sink.size, sink.digest.hexdigest(), tuple(records))


def read_member_at(src: BinaryIO, offset: int, size: int, sha256: str) -> bytes:
    """The bytes of the member recorded at ``offset`` (seekable ``src``), checked against ``sha256``.

    Raises ``MemberMismatch`` when the shard is too short or the bytes hash differently.
    """
    src.seek(offset)
    data = src.read(size)
    if len(data) != size:
        raise MemberMismatch(f"shard ends before the member at offset {offset} ({len(data)} of {size} bytes)")
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise MemberMismatch(f"member at offset {offset} has sha256 {got[:12]}…, the index says {sha256[:12]}…")
    return data


def read_member(src: BinaryIO, record: MemberRecord) -> bytes:
    """Find ``record.name`` in the tar by its headers (seekable ``src``), check that it sits where the
    record says, and return its verified bytes. Raises ``MemberMismatch`` when it is absent, moved,
    resized or has other bytes."""
    src.seek(0)
    try:
        with tarfile.open(fileobj=src, mode="r:", encoding=_ENCODING) as tar:
            info = tar.getmember(record.name)
    except KeyError as exc:
        raise MemberMismatch(f"member {record.name!r} is not in the shard") from exc
    except tarfile.TarError as exc:
        raise MemberMismatch(f"shard is not a readable tar: {exc}") from exc
    if info.offset_data != record.offset or info.size != record.size:
        raise MemberMismatch(
            f"member {record.name!r} is at {info.offset_data} ({info.size} bytes), "
            f"the index says {record.offset} ({record.size} bytes)"
        )
    return read_member_at(src, record.offset, record.size, record.sha256)


def iter_members(src: BinaryIO) -> Iterator[MemberRecord]:
    """Every regular member of a tar stream (read once, no seeking) with its data offset, size and the
    sha256 of its bytes: what ``verify --deep`` compares with the index. Raises ``MemberMismatch`` for a
    truncated or unreadable tar and for a member name that is not ``<key>.<field>``."""
    try:
        with tarfile.open(fileobj=src, mode="r|", encoding=_ENCODING) as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, dot, field_name = info.name.partition(".")
                if not dot or "/" in info.name:
                    raise MemberMismatch(f"member {info.name!r} is not named <key>.<field>")
                digest = hashlib.sha256()
                handle = tar.extractfile(info)
                assert handle is not None  # regular members always have a file object
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                yield MemberRecord(info.name, key, field_name, info.offset_data, info.size, digest.hexdigest())
    except (tarfile.TarError, EOFError) as exc:
        raise MemberMismatch(f"shard is not a readable tar: {exc}") from exc


def list_members(src: BinaryIO) -> list[MemberRecord]:
    """Every regular member of a seekable tar by its headers alone (the data is skipped, not read):
    name, offset and size, with an empty sha256. What plain ``verify`` compares with the index: a
    shard's member listing costs one 512-byte read per member, whatever the members' sizes. Raises
    ``MemberMismatch`` for a tar whose headers cannot be read."""
    src.seek(0)
    out = []
    try:
        with tarfile.open(fileobj=src, mode="r:", encoding=_ENCODING) as tar:
            for info in tar:
                if info.isreg():
                    key, _, field_name = info.name.partition(".")
                    out.append(MemberRecord(info.name, key, field_name, info.offset_data, info.size, ""))
    except (tarfile.TarError, EOFError) as exc:
        raise MemberMismatch(f"shard is not a readable tar: {exc}") from exc
    return out


def _compare(got: MemberRecord, rec: MemberRecord | None, hashes: bool) -> str:
    """One problem line for a member found in the shard ("" when it matches its index record)."""
    if rec is None:
        return f"{got.name}: in the shard but not in the index"
    if (got.offset, got.size) != (rec.offset, rec.size):
        return f"{got.name}: at {got.offset} ({got.size} bytes), the index says {rec.offset} ({rec.size} bytes)"
    if hashes and got.sha256 != rec.sha256:
        return f"{got.name}: sha256 {got.sha256[:12]}…, the index says {rec.sha256[:12]}…"
    return ""


def check_listing(listed: Sequence[MemberRecord], expected: Iterable[MemberRecord]) -> list[str]:
    """``verify_shard`` without the hashes: a shard's member listing (``list_members``) against the
    members an index says it holds; names, offsets and sizes only."""
    want = {m.name: m for m in expected}
    problems = [line for got in listed if (line := _compare(got, want.get(got.name), hashes=False))]
    seen = {m.name for m in listed}
    return problems + [f"{name}: {ABSENT_FROM_SHARD}" for name in sorted(set(want) - seen)]


def verify_shard(src: BinaryIO, expected: Iterable[MemberRecord]) -> list[str]:
    """Read a shard once (a stream; no seeking) and compare it with the members an index says it holds.

    Returns one line per problem, empty when every expected member is there at its offset with its size
    and sha256: a missing member, one that moved, was resized or has other bytes, a member the index does
    not know, or a shard that cannot be read to its end. What ``verify --deep`` reports per shard.
    """
    want = {m.name: m for m in expected}
    problems: list[str] = []
    seen: set[str] = set()
    try:
        for got in iter_members(src):
            seen.add(got.name)
            line = _compare(got, want.get(got.name), hashes=True)
            if line:
                problems.append(line)
    except MemberMismatch as exc:
        problems.append(f"unreadable after {len(seen)} members: {exc}")
    problems += [f"{name}: {ABSENT_FROM_SHARD}" for name in sorted(set(want) - seen)]
    return problems
