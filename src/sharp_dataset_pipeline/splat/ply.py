"""SHARP-layout PLY files: encode, write, read and validate. Pure apart from ``write_ply``'s file.

The layout is exactly what ml-sharp's ``save_ply`` writes through ``plyfile``: a
``binary_little_endian 1.0`` header, the ``vertex`` element (14 float32 properties, SHARP's order),
then seven one-property metadata elements (``extrinsic`` … ``version``). Because the vertex block of
:class:`Gaussians` is already an ``(N, 14)`` little-endian float32 array, the body is its raw bytes:
nothing here loops over Gaussians in Python.

Reading parses the header by hand and uses ``np.frombuffer`` / ``readinto``; ``plyfile`` is only used
by the tests to prove byte identity.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sharp_dataset_pipeline.errors import PermanentError
from sharp_dataset_pipeline.fsio import atomic_file
from sharp_dataset_pipeline.splat.gaussians import VERTEX_PROPERTIES, Gaussians

logger = logging.getLogger(__name__)

FORMAT_LINE = "format binary_little_endian 1.0"
VERTEX_SIZE = 4 * len(VERTEX_PROPERTIES)  # 56 bytes per Gaussian

# (element name, count, PLY type name, numpy dtype), in the order SHARP writes them.
METADATA_ELEMENTS: tuple[tuple[str, int, str, str], ...] = (
    ("extrinsic", 16, "float", "<f4"),
    ("intrinsic", 9, "float", "<f4"),
    ("image_size", 2, "uint", "<u4"),
    ("frame", 2, "int", "<i4"),
    ("disparity", 2, "float", "<f4"),
    ("color_space", 1, "uchar", "u1"),
    ("version", 3, "uchar", "u1"),
)
METADATA_SIZE = sum(count * np.dtype(dt).itemsize for _, count, _, dt in METADATA_ELEMENTS)  # 128

# plyfile accepts both spellings of each type; both mean the same bytes, so reading accepts both too.
_TYPE_ALIASES = {
    "float32": "float",
    "uint32": "uint",
    "int32": "int",
    "uint8": "uchar",
}
_MAX_HEADER = 64 * 1024  # a SHARP header is 670 bytes; anything far bigger is not ours
_FINITE_CHUNK_ROWS = 1 << 18


class InvalidSplat(PermanentError):
    """A PLY file is not a well-formed SHARP-layout splat (the message says what is wrong)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="invalid_ply")


@dataclass(frozen=True)
class PlyInfo:
    """What validation learned about a SHARP PLY file."""

    count: int
    width: int
    height: int
    focal_px: float
    size: int


@dataclass(frozen=True)
class _Layout:
    header_size: int
    count: int
    has_metadata: bool

    @property
    def expected_size(self) -> int:
        return self.header_size + self.count * VERTEX_SIZE + (METADATA_SIZE if self.has_metadata else 0)


# ---------------------------------------------------------------------------------------------
# encoding


def ply_header(count: int) -> bytes:
    """The exact header plyfile writes for SHARP's layout with ``count`` Gaussians."""
    lines = ["ply", FORMAT_LINE, f"element vertex {count}"]
    lines += [f"property float {name}" for name in VERTEX_PROPERTIES]
    for name, n, ply_type, _ in METADATA_ELEMENTS:
        lines += [f"element {name} {n}", f"property {ply_type} {name}"]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _metadata_bytes(g: Gaussians) -> bytes:
    extrinsic = np.asarray(g.extrinsic, dtype="<f4").reshape(-1)
    if extrinsic.size != 16:
        raise ValueError(f"extrinsic must have 16 values, got {extrinsic.size}")
    disparity = g.disparity if g.disparity is not None else (0.0, 0.0)
    values = (
        extrinsic,
        g.intrinsic,
        (g.width, g.height),
        (1, g.count),
        disparity,
        (g.color_space,),
        g.version,
    )
    parts = []
    for (name, n, _, dt), value in zip(METADATA_ELEMENTS, values, strict=True):
        arr = np.asarray(value, dtype=dt).reshape(-1)
        if arr.size != n:
            raise ValueError(f"metadata element {name} needs {n} values, got {arr.size}")
        parts.append(arr.tobytes())
    return b"".join(parts)


def _vertex_view(g: Gaussians) -> memoryview:
    # Gaussians makes the block C-contiguous '<f4' (no copy then); this also covers a block that was
    # reassigned after construction. Cast to bytes so writers and hashers take it as is.
    return memoryview(np.ascontiguousarray(g.vertices, dtype="<f4")).cast("B")


def encode_ply(g: Gaussians) -> bytes:
    """The complete PLY file for ``g``, byte-identical to ml-sharp's ``save_ply`` through plyfile."""
    return b"".join((ply_header(g.count), _vertex_view(g), _metadata_bytes(g)))


def write_ply(g: Gaussians, path: Path, *, fsync: bool = False) -> tuple[int, str]:
    """Write ``g`` to ``path`` atomically; return ``(size in bytes, sha256 hex)``.

    The file is written to a temporary name in the same folder and renamed over ``path`` only
    when complete, so readers never see a partial file. The vertex block is streamed from the
    array's memory (no 66 MB copy) and hashed as it is written. ``fsync`` flushes the data to
    disk before the rename; the store that publishes the file decides whether it needs that.
    """
    path = Path(path)
    parts = (ply_header(g.count), _vertex_view(g), _metadata_bytes(g))
    digest = hashlib.sha256()
    size = 0
    with atomic_file(path, fsync=fsync) as f:
        for part in parts:
            f.write(part)
            digest.update(part)
            size += len(part)
    logger.debug("wrote %s (%d Gaussians, %d bytes)", path, g.count, size)
    return size, digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# header parsing and checks


def _split_header(head: bytes) -> tuple[list[str], int]:
    if not head:
        raise InvalidSplat("empty file (0 bytes)")
    if not head.startswith(b"ply\n") and not head.startswith(b"ply\r\n"):
        raise InvalidSplat(f"not a PLY file: starts with {head[:16]!r} instead of 'ply'")
    end = head.find(b"end_header\n")
    if end < 0:
        raise InvalidSplat(f"no 'end_header' line in the first {min(len(head), _MAX_HEADER)} bytes")
    header_size = end + len(b"end_header\n")
    try:
        text = head[:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidSplat(f"header is not ASCII (byte {exc.start})") from exc
    lines = [line.rstrip("\r") for line in text.split("\n")]
    # Comments and obj_info carry no layout; SHARP writes none but other tools may.
    lines = [line for line in lines if line.strip() and not line.startswith(("comment", "obj_info"))]
    return lines, header_size


def _parse_elements(lines: list[str]) -> list[tuple[str, int, list[tuple[str, str]]]]:
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in lines[2:]:
        words = line.split()
        if words[0] == "element" and len(words) == 3:
            try:
                count = int(words[2])
            except ValueError as exc:
                raise InvalidSplat(f"bad element count in header line {line!r}") from exc
            if count < 0:
                raise InvalidSplat(f"negative element count in header line {line!r}")
            elements.append((words[1], count, []))
        elif words[0] == "property" and len(words) == 3 and elements:
            elements[-1][2].append((_TYPE_ALIASES.get(words[1], words[1]), words[2]))
        elif words[0] == "property" and len(words) > 1 and words[1] == "list":
            raise InvalidSplat(f"list property not allowed in a SHARP splat: {line!r}")
        else:
            raise InvalidSplat(f"unexpected header line {line!r}")
    return elements


def _parse_header(head: bytes, *, allow_missing_metadata: bool) -> _Layout:
    lines, header_size = _split_header(head)
    if len(lines) < 2 or lines[1] != FORMAT_LINE:
        found = lines[1] if len(lines) > 1 else "nothing"
        raise InvalidSplat(f"format line must be {FORMAT_LINE!r}, found {found!r}")
    elements = _parse_elements(lines)
    if not elements or elements[0][0] != "vertex":
        raise InvalidSplat("the first element must be 'vertex'")
    _, count, props = elements[0]
    _check_vertex_properties(props)
    if count == 0:
        raise InvalidSplat("the splat has no Gaussians (element vertex 0)")
    meta = elements[1:]
    if not meta and allow_missing_metadata:
        return _Layout(header_size, count, has_metadata=False)
    _check_metadata_layout(meta)
    return _Layout(header_size, count, has_metadata=True)


def _check_vertex_properties(props: list[tuple[str, str]]) -> None:
    expected = [("float", name) for name in VERTEX_PROPERTIES]
    for i, (want, got) in enumerate(zip(expected, props, strict=False)):  # lengths checked below
        if want != got:
            raise InvalidSplat(
                f"vertex property #{i} must be '{' '.join(want)}', found '{' '.join(got)}' "
                f"(SHARP's order: {' '.join(VERTEX_PROPERTIES)}, all float)"
            )
    if len(props) != len(expected):
        raise InvalidSplat(f"found {len(props)} vertex properties; SHARP writes exactly {len(expected)}")


def _check_metadata_layout(meta: list[tuple[str, int, list[tuple[str, str]]]]) -> None:
    names = [name for name, _, _ in meta]
    wanted = [name for name, _, _, _ in METADATA_ELEMENTS]
    if names != wanted:
        raise InvalidSplat(f"metadata elements must be {wanted} in this order, got {names}")
    for (name, count, props), (_, n, ply_type, _) in zip(meta, METADATA_ELEMENTS, strict=True):
        if count != n:
            raise InvalidSplat(f"element {name} must have {n} values, header says {count}")
        if props != [(ply_type, name)]:
            raise InvalidSplat(f"element {name} must have one '{ply_type} {name}' property, got {props}")


def _check_size(layout: _Layout, size: int) -> None:
    expected = layout.expected_size
    if size < expected:
        raise InvalidSplat(f"truncated: header promises {expected} bytes, file has {size}")
    if size > expected:
        raise InvalidSplat(f"{size - expected} unexpected trailing bytes after the last element")


def _decode_metadata(raw: bytes | memoryview) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    offset = 0
    for name, n, _, dt in METADATA_ELEMENTS:
        out[name] = np.frombuffer(raw, dtype=dt, count=n, offset=offset)
        offset += n * np.dtype(dt).itemsize
    return out


def _check_metadata_values(meta: dict[str, np.ndarray], count: int) -> None:
    frame = meta["frame"]
    if int(frame[1]) != count:
        raise InvalidSplat(f"frame says {int(frame[1])} Gaussians but the vertex element has {count}")
    if int(frame[0]) != 1:
        raise InvalidSplat(f"frame says {int(frame[0])} frames; SHARP writes exactly 1")
    for name in ("extrinsic", "intrinsic", "disparity"):
        if not np.isfinite(meta[name]).all():
            raise InvalidSplat(f"element {name} holds non-finite values: {meta[name].tolist()}")
    focal = float(meta["intrinsic"][0])
    width, height = (int(x) for x in meta["image_size"])
    if focal <= 0 or width <= 0 or height <= 0:
        raise InvalidSplat(f"camera is not usable: focal {focal} px, image size {width}x{height}")


def _check_finite(vertices: np.ndarray, first_row: int = 0) -> None:
    bad = ~np.isfinite(vertices)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    value = float(vertices[row, col])
    total = int(bad.sum())
    raise InvalidSplat(
        f"non-finite vertex value {value} at Gaussian {first_row + row} property "
        f"{VERTEX_PROPERTIES[col]} ({total} non-finite values in this block)"
    )


def _check_finite_chunked(vertices: np.ndarray) -> None:
    # Chunks bound the temporary boolean mask to a few MB whatever N is.
    for start in range(0, vertices.shape[0], _FINITE_CHUNK_ROWS):
        _check_finite(vertices[start : start + _FINITE_CHUNK_ROWS], first_row=start)


# ---------------------------------------------------------------------------------------------
# reading


def _gaussians_from(vertices: np.ndarray, meta: dict[str, np.ndarray] | None) -> Gaussians:
    if meta is None:
        # Vertex-only file: no camera is known; zeros make previews pick an automatic camera.
        return Gaussians(vertices=vertices, focal_px=0.0, width=0, height=0)
    disparity = meta["disparity"]
    return Gaussians(
        vertices=vertices,
        focal_px=float(meta["intrinsic"][0]),
        width=int(meta["image_size"][0]),
        height=int(meta["image_size"][1]),
        disparity=(float(disparity[0]), float(disparity[1])),
        color_space=int(meta["color_space"][0]),
        version=(int(meta["version"][0]), int(meta["version"][1]), int(meta["version"][2])),
        extrinsic=meta["extrinsic"].reshape(4, 4).copy(),
    )


def _read_bytes(data: bytes | bytearray | memoryview, allow_missing_metadata: bool) -> Gaussians:
    buf = memoryview(data).cast("B")
    layout = _parse_header(bytes(buf[:_MAX_HEADER]), allow_missing_metadata=allow_missing_metadata)
    _check_size(layout, len(buf))
    body = layout.header_size + layout.count * VERTEX_SIZE
    meta = _decode_metadata(buf[body:]) if layout.has_metadata else None
    if meta is not None:
        _check_metadata_values(meta, layout.count)
    vertices = np.frombuffer(buf, dtype="<f4", count=layout.count * 14, offset=layout.header_size)
    vertices = vertices.reshape(layout.count, 14).copy()  # own, writable memory, independent of data
    _check_finite_chunked(vertices)
    return _gaussians_from(vertices, meta)


def _read_path(path: Path, allow_missing_metadata: bool) -> Gaussians:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        layout = _parse_header(f.read(_MAX_HEADER), allow_missing_metadata=allow_missing_metadata)
        _check_size(layout, size)
        f.seek(layout.header_size)
        vertices = np.empty((layout.count, 14), dtype="<f4")
        got = f.readinto(memoryview(vertices).cast("B"))
        if got != vertices.nbytes:
            raise InvalidSplat(f"file shrank while reading: got {got} of {vertices.nbytes} vertex bytes")
        meta = _decode_metadata(f.read(METADATA_SIZE)) if layout.has_metadata else None
    if meta is not None:
        _check_metadata_values(meta, layout.count)
    _check_finite_chunked(vertices)
    return _gaussians_from(vertices, meta)


def read_ply(
    source: Path | str | bytes | bytearray | memoryview, *, allow_missing_metadata: bool = False
) -> Gaussians:
    """Read and validate a SHARP-layout PLY from a path or from bytes in memory.

    Every check of :func:`validate_ply` applies. ``allow_missing_metadata=True`` also accepts a
    vertex-only file (SHARP's 14 properties and no other element, as some converters write); its
    Gaussians then have ``focal_px == 0`` and a zero image size. Only ``fx`` of the ``intrinsic``
    element is kept: SHARP always writes ``fy == fx``, ``cx == W/2``, ``cy == H/2``.
    Raises :class:`InvalidSplat` with a readable message when the file is not valid.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_bytes(source, allow_missing_metadata)
    return _read_path(Path(source), allow_missing_metadata)


def validate_ply(source: Path | str | bytes | bytearray | memoryview) -> PlyInfo:
    """Check that a file is a complete, finite SHARP-layout splat; return what it describes.

    Checks: the ``ply`` magic and ``binary_little_endian 1.0`` format; the ``vertex`` element with
    SHARP's 14 float properties in order; the 7 metadata elements in order with their counts and
    types (all required); file size equal to header + counts × sizes; every vertex value finite;
    ``frame == [1, N]``; a finite camera with positive focal length and image size.
    A path is checked through a read-only memory map, so a 66 MB file is not copied.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        g = _read_bytes(source, allow_missing_metadata=False)
        return PlyInfo(g.count, g.width, g.height, g.focal_px, len(memoryview(source).cast("B")))
    path = Path(source)
    size = path.stat().st_size
    with open(path, "rb") as f:
        layout = _parse_header(f.read(_MAX_HEADER), allow_missing_metadata=False)
    _check_size(layout, size)
    mm = np.memmap(path, dtype="u1", mode="r")
    body = layout.header_size + layout.count * VERTEX_SIZE
    meta = _decode_metadata(bytes(mm[body:]))
    _check_metadata_values(meta, layout.count)
    _check_finite_chunked(mm[layout.header_size : body].view("<f4").reshape(layout.count, 14))
    return PlyInfo(
        count=layout.count,
        width=int(meta["image_size"][0]),
        height=int(meta["image_size"][1]),
        focal_px=float(meta["intrinsic"][0]),
        size=size,
    )
