"""Niantic's SPZ splat format, written and read in process with numpy. Pure: arrays in, bytes out.

The reference is Niantic's ``nianticlabs/spz`` (``load-spz.cc``); this is our own vectorised
implementation of the same layout and the same rounding, so a scene encodes to the same attribute
bytes as the reference library (which splat-transform embeds) and reads back in every SPZ viewer.

Layout. One record of six attribute arrays, stored attribute by attribute (not interleaved):

- positions: 3 × signed 24-bit fixed point per Gaussian, ``round(x · 2**fractional_bits)``;
- alphas: ``round(sigmoid(opacity) · 255)``;
- colours: the SH DC coefficients, ``round(f_dc · 0.15 · 255 + 127.5)``;
- scales: the log-scales, ``round((s + 10) · 16)`` (so -10 … 5.94 in steps of 1/16);
- rotations: version 3 and 4 store the unit quaternion "smallest three": 2 bits for the index of
  the largest component (made positive), then the other three as sign + 9-bit magnitude scaled by
  1/√2, in one little-endian 32-bit word. Version 2 stored x, y, z in 3 bytes; we read it only;
- higher SH bands (if any): 8 bits, coefficient-major with the colour channel innermost, the first
  band on a 1/32 grid and the others on 1/16 (the reference's default ``sh1Bits=5, shRestBits=4``).

All 8-bit values are rounded half away from zero and clamped to 0 … 255, as the reference does.

Containers. Version 3 (``SPZ_VERSION=3``): a 16-byte header and the six arrays, all in one gzip
stream. Version 4 (the default, what the reference library and splat-transform 3.7 write): a plain
32-byte header, a table of contents (compressed and uncompressed size of each stream, 16 bytes per
stream) and one zstd frame per non-empty attribute array.

Axes are not converted (the reference's ``from: UNSPECIFIED``, as splat-transform writes): the file
holds the PLY's own coordinates.

Positions. The reference always uses 12 fractional bits (a 1/4096 grid, ±2048 units). A scene that
reaches beyond ±2048 gets fewer fractional bits, the most that fit (each bit fewer doubles both the
range and the step; readers take the bits from the header); a scene beyond ±2**23 units, or with any
non-finite value, raises :class:`SpzError`. Coordinates are never wrapped.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

from .gaussians import F_DC, OPACITY, ROT, SCALE, XYZ, Gaussians

MAGIC = b"NGSP"
VERSIONS = (3, 4)  # what we write; the reader also takes 2
DEFAULT_VERSION = 4
DEFAULT_FRACTIONAL_BITS = 12
# The reference compresses at level 12 (and then our files are byte-identical to its); level 3 makes files 1-3 %
# larger and compresses about 7 times faster (measured on the bench_spz.py scenes).
DEFAULT_ZSTD_LEVEL = 3
REFERENCE_ZSTD_LEVEL = 12
GZIP_LEVEL = 6  # zlib's default, as the reference's v3 writer uses
COLOR_SCALE = np.float32(0.15)
SH1_BITS = 5
SH_REST_BITS = 4
FLAG_ANTIALIASED = 0x01
FLAG_EXTENSIONS = 0x02
_SQRT1_2 = np.float32(0.7071067811865476)
_MAG_MASK = (1 << 9) - 1
_OTHERS = np.array([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])  # component indices other than the largest
_FIXED_MIN, _FIXED_MAX = -(1 << 23), (1 << 23) - 1
_SH_DIMS = {0: 0, 3: 1, 8: 2, 15: 3}  # coefficients per channel → degree
_LEGACY_HEADER = struct.Struct("<4sIIBBBB")  # 16 bytes
_HEADER = struct.Struct("<4sIIBBBBI12x")  # 32 bytes
_TOC_ENTRY = struct.Struct("<QQ")
_ALPHA_EPS = 1e-6
# The most Gaussians a file may say it holds (SHARP writes 1.2 M; 33.5 M unpack to ~2 GB of float32):
# a header is read before its streams, so a few hostile bytes cannot make us unpack gigabytes.
MAX_READ_GAUSSIANS = 1 << 25


class SpzError(ValueError):
    """The scene cannot be written as SPZ, or the bytes are not a readable SPZ file."""


@dataclass(frozen=True)
class SplatArrays:
    """One scene in 3DGS PLY conventions: positions, SH DC colours (``f_dc``), opacity logits,
    log-scales, quaternions as (w, x, y, z) like ``rot_0..3``, and optional higher SH bands
    ``sh_rest`` in PLY's ``f_rest_*`` order (channel-major: all red coefficients, then green, blue)."""

    positions: np.ndarray  # (N, 3)
    colors: np.ndarray  # (N, 3)
    alphas: np.ndarray  # (N,)
    scales: np.ndarray  # (N, 3)
    rotations: np.ndarray  # (N, 4) w, x, y, z
    sh_rest: np.ndarray | None = None  # (N, 3 * coefficients per channel)

    @property
    def count(self) -> int:
        return int(self.positions.shape[0])

    @property
    def sh_degree(self) -> int:
        width = 0 if self.sh_rest is None else int(self.sh_rest.shape[1])
        return _SH_DIMS[width // 3]


@dataclass(frozen=True)
class SpzFile:
    """What :func:`decode_spz` read: the header fields and the decoded scene."""

    version: int
    fractional_bits: int
    antialiased: bool
    scene: SplatArrays


def position_step(fractional_bits: int) -> float:
    """The grid spacing of positions stored with ``fractional_bits``."""
    return 1.0 / (1 << fractional_bits)


# ---------------------------------------------------------------------------------------------
# checks


def _check_shapes(s: SplatArrays) -> None:
    n = s.count
    want = {"positions": (n, 3), "colors": (n, 3), "alphas": (n,), "scales": (n, 3), "rotations": (n, 4)}
    for name, shape in want.items():
        got = np.shape(getattr(s, name))
        if got != shape:
            raise SpzError(f"{name} must have shape {shape}, got {got}")
    if s.sh_rest is not None:
        width = s.sh_rest.shape[1] if s.sh_rest.ndim == 2 else -1
        if s.sh_rest.shape[0] != n or width % 3 or width // 3 not in _SH_DIMS:
            raise SpzError(f"sh_rest must be (N, 9|24|45), got {s.sh_rest.shape}")
    if n == 0:
        raise SpzError("the scene has no Gaussians; SPZ readers reject an empty file")
    if n > np.iinfo(np.int32).max:
        raise SpzError(f"{n} Gaussians is more than SPZ's 32-bit count holds")


def _check_finite(name: str, a: np.ndarray) -> None:
    finite = np.isfinite(a)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    raise SpzError(
        f"{name} holds {int((~finite).sum())} non-finite values (first: {float(a[tuple(bad)])} at Gaussian "
        f"{int(bad[0])}); SPZ cannot store them"
    )


def choose_fractional_bits(positions: np.ndarray, preferred: int = DEFAULT_FRACTIONAL_BITS) -> int:
    """The most fractional bits, at most ``preferred``, at which every coordinate fits in 24 bits.

    Raises :class:`SpzError` when none does (a coordinate beyond ±2**23 units).
    """
    lo, hi = float(np.min(positions)), float(np.max(positions))
    for bits in range(preferred, -1, -1):
        scale = float(1 << bits)
        if _round_away(np.float64(lo * scale)) >= _FIXED_MIN and _round_away(np.float64(hi * scale)) <= _FIXED_MAX:
            return bits
    raise SpzError(
        f"positions span {lo:g} … {hi:g}; SPZ's 24-bit fixed point reaches at most ±{1 << 23} units"
    )


# ---------------------------------------------------------------------------------------------
# quantisation (float32 arithmetic in the reference's order, so rounding matches it)


def _round_away(x: np.ndarray) -> np.ndarray:
    """C's ``round``: half away from zero (numpy's ``round`` goes half to even). Exact for float32 inputs."""
    x = np.asarray(x, dtype=np.float64)
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(_round_away(x), 0, 255).astype(np.uint8)


def _pack_positions(p: np.ndarray, bits: int) -> np.ndarray:
    fixed = _round_away(p.astype(np.float32) * np.float32(1 << bits)).astype(np.int32)
    if fixed.size and (fixed.min() < _FIXED_MIN or fixed.max() > _FIXED_MAX):
        raise SpzError(f"positions do not fit 24-bit fixed point with {bits} fractional bits")
    raw = fixed.astype("<i4").reshape(-1, 1).view(np.uint8)  # little-endian bytes of each value
    return np.ascontiguousarray(raw[:, :3]).reshape(-1)


def _pack_alphas(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    with np.errstate(over="ignore"):  # exp overflow → sigmoid 0, as in C
        sig = np.float32(1) / (np.float32(1) + np.exp(-a))
    return _to_u8(sig * np.float32(255))


def _pack_colors(c: np.ndarray) -> np.ndarray:
    return _to_u8(c.astype(np.float32) * (COLOR_SCALE * np.float32(255)) + np.float32(127.5)).reshape(-1)


def _pack_scales(s: np.ndarray) -> np.ndarray:
    return _to_u8((s.astype(np.float32) + np.float32(10)) * np.float32(16)).reshape(-1)


def _pack_rotations(wxyz: np.ndarray) -> np.ndarray:
    q = wxyz.astype(np.float32)[:, [1, 2, 3, 0]]  # the reference works in x, y, z, w order
    norm = np.sqrt(((q[:, 0] * q[:, 0] + q[:, 1] * q[:, 1]) + q[:, 2] * q[:, 2]) + q[:, 3] * q[:, 3])
    if not (norm > 0).all():
        first = int(np.argmin(norm > 0))
        raise SpzError(f"Gaussian {first} has a zero quaternion, which is no rotation; SPZ cannot store it")
    q = q / norm[:, None]
    aq = np.abs(q)
    largest = np.argmax(aq, axis=1)  # first of equal maxima, as the reference's strict '>' scan
    negate = np.take_along_axis(q, largest[:, None], 1)[:, 0] < 0
    mags = (np.float32(_MAG_MASK) * (aq / _SQRT1_2) + np.float32(0.5)).astype(np.uint32)
    values = (((q < 0) ^ negate[:, None]).astype(np.uint32) << np.uint32(9)) | mags
    kept = np.take_along_axis(values, _OTHERS[largest], 1)  # the three smaller components, in index order
    comp = (largest.astype(np.uint32) << np.uint32(30)) | (kept[:, 0] << np.uint32(20)) | (kept[:, 1] << np.uint32(10))
    comp |= kept[:, 2]
    return comp.astype("<u4").view(np.uint8)


def _pack_sh(sh_rest: np.ndarray) -> np.ndarray:
    n, width = sh_rest.shape
    dim = width // 3
    coeffs = sh_rest.astype(np.float32).reshape(n, 3, dim).transpose(0, 2, 1)  # (N, coefficient, channel)
    q = _round_away(coeffs * np.float32(128)) + 128.0
    q = np.clip(q, -(1 << 20), 1 << 20).astype(np.int64)  # far outside 0..255 either way; avoid overflow
    bucket = np.full(dim, 1 << (8 - SH_REST_BITS), dtype=np.int64)
    bucket[: min(3, dim)] = 1 << (8 - SH1_BITS)
    shifted = q + (bucket // 2)[None, :, None]
    q = shifted - np.fmod(shifted, bucket[None, :, None])  # C's truncating (a / b) * b
    return np.clip(q, 0, 255).astype(np.uint8).reshape(-1)


def pack_attributes(s: SplatArrays, fractional_bits: int | None = None) -> tuple[int, list[np.ndarray]]:
    """Quantise ``s``: (fractional bits used, [positions, alphas, colours, scales, rotations, sh] bytes).

    ``fractional_bits=None`` chooses them (:func:`choose_fractional_bits`); an explicit value that
    does not fit raises :class:`SpzError`.
    """
    _check_shapes(s)
    for name in ("positions", "colors", "alphas", "scales", "rotations", "sh_rest"):
        value = getattr(s, name)
        if value is not None:
            _check_finite(name, np.asarray(value))
    bits = choose_fractional_bits(s.positions) if fractional_bits is None else int(fractional_bits)
    if not 0 <= bits <= 23:
        raise SpzError(f"fractional bits must be 0 … 23, got {bits}")
    sh = _pack_sh(s.sh_rest) if s.sh_rest is not None and s.sh_rest.shape[1] else np.zeros(0, np.uint8)
    streams = [_pack_positions(s.positions, bits), _pack_alphas(s.alphas), _pack_colors(s.colors),
               _pack_scales(s.scales), _pack_rotations(s.rotations), sh]
    return bits, streams


# ---------------------------------------------------------------------------------------------
# containers


def encode_spz(
    s: SplatArrays,
    *,
    version: int = DEFAULT_VERSION,
    fractional_bits: int | None = None,
    antialiased: bool = False,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
) -> bytes:
    """``s`` as the bytes of an ``.spz`` file of ``version`` 4 (zstd streams) or 3 (one gzip stream).

    Deterministic: the same scene and options give the same bytes. Raises :class:`SpzError` for a
    scene SPZ cannot hold (non-finite values, zero quaternions, positions beyond ±2**23, no Gaussians).
    """
    if version not in VERSIONS:
        raise SpzError(f"SPZ version must be one of {VERSIONS}, got {version}")
    bits, streams = pack_attributes(s, fractional_bits)
    flags = FLAG_ANTIALIASED if antialiased else 0
    if version == 3:
        head = _LEGACY_HEADER.pack(MAGIC, 3, s.count, s.sh_degree, bits, flags, 0)
        deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9)
        parts = [deflate.compress(head)] + [deflate.compress(memoryview(a)) for a in streams]
        return b"".join(parts) + deflate.flush()
    cctx = zstandard.ZstdCompressor(level=zstd_level, write_content_size=True, write_checksum=False)
    frames = [cctx.compress(memoryview(a)) for a in streams if a.size]
    sizes = [a.size for a in streams if a.size]
    head = _HEADER.pack(MAGIC, 4, s.count, s.sh_degree, bits, flags, len(frames), _HEADER.size)
    toc = b"".join(_TOC_ENTRY.pack(len(f), u) for f, u in zip(frames, sizes, strict=True))
    return b"".join([head, toc, *frames])


def _stream_sizes(n: int, sh_degree: int, version: int) -> list[int]:
    per_channel = (0, 3, 8, 15)[sh_degree]
    return [9 * n, n, 3 * n, 3 * n, (3 if version == 2 else 4) * n, 3 * per_channel * n]


def _check_count(n: int) -> None:
    if n > MAX_READ_GAUSSIANS:
        raise SpzError(f"the header says {n} Gaussians, more than the {MAX_READ_GAUSSIANS} this reader takes")


def _gunzip_payload(data: bytes) -> bytes:
    """The gzip stream's header and at most the bytes its count of Gaussians needs (``gzip.decompress``
    would expand a small gzip bomb into all of memory before the header is even checked)."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        head = inflate.decompress(data, _LEGACY_HEADER.size)
        if len(head) < _LEGACY_HEADER.size:
            return head  # _split_legacy names the short payload
        magic, version, n, degree = _LEGACY_HEADER.unpack_from(head)[:4]
        if magic != MAGIC or version not in (2, 3) or degree > 3:
            return head  # _split_legacy names the bad header
        _check_count(n)
        need = sum(_stream_sizes(n, degree, version))
        body = inflate.decompress(inflate.unconsumed_tail, need) if need else b""
        _drain(inflate)
    except zlib.error as exc:
        raise SpzError(f"gzip stream is damaged ({exc})") from exc
    return head + body


_MAX_TRAILING = 1 << 20


def _drain(inflate: zlib._Decompress) -> None:
    """Read the stream to its end, so its CRC is checked, allowing at most 1 MiB past the arrays."""
    extra = 0
    while not inflate.eof:
        chunk = inflate.decompress(inflate.unconsumed_tail, 1 << 16)
        if not chunk and not inflate.unconsumed_tail:
            break  # all input read, no more output: the stream ends early
        extra += len(chunk)
        if extra > _MAX_TRAILING:
            raise SpzError("the gzip payload holds over 1 MiB more than its Gaussians need")
    if not inflate.eof:
        raise SpzError("gzip stream is truncated")


def _split_legacy(raw: bytes) -> tuple[tuple[int, int, int, int, int], list[bytes]]:
    if len(raw) < _LEGACY_HEADER.size:
        raise SpzError("gzip payload is shorter than the SPZ header")
    magic, version, n, degree, bits, flags, _ = _LEGACY_HEADER.unpack_from(raw)
    if magic != MAGIC or version not in (2, 3) or degree > 3:
        raise SpzError(f"gzip payload: magic {magic!r}, version {version}, SH degree {degree}")
    sizes = _stream_sizes(n, degree, version)
    if len(raw) < _LEGACY_HEADER.size + sum(sizes):
        raise SpzError(f"payload holds {len(raw)} bytes, {n} Gaussians need {_LEGACY_HEADER.size + sum(sizes)}")
    out, offset = [], _LEGACY_HEADER.size
    for size in sizes:
        out.append(raw[offset:offset + size])
        offset += size
    return (version, n, degree, bits, flags), out


def _split_v4(data: bytes) -> tuple[tuple[int, int, int, int, int], list[bytes]]:
    if len(data) < _HEADER.size:
        raise SpzError("shorter than the 32-byte SPZ header")
    magic, version, n, degree, bits, flags, count, toc = _HEADER.unpack_from(data)
    if magic != MAGIC or version != 4 or degree > 3:
        raise SpzError(f"header: magic {magic!r}, version {version}, SH degree {degree}")
    _check_count(n)
    sizes = [s for s in _stream_sizes(n, degree, 4) if s]
    if count != len(sizes) or toc < _HEADER.size or toc + 16 * count > len(data):
        raise SpzError(f"header promises {count} streams with the table at byte {toc}")
    dctx = zstandard.ZstdDecompressor()
    out, offset = [], toc + 16 * count
    for i, want in enumerate(sizes):
        packed, unpacked = _TOC_ENTRY.unpack_from(data, toc + 16 * i)
        if unpacked != want or offset + packed > len(data):
            raise SpzError(f"stream {i}: {unpacked} bytes at {offset}+{packed}, expected {want} bytes")
        try:
            block = dctx.decompress(data[offset:offset + packed], max_output_size=want)
        except zstandard.ZstdError as exc:
            raise SpzError(f"stream {i} is not a valid zstd frame: {exc}") from exc
        if len(block) != want:
            raise SpzError(f"stream {i} decompresses to {len(block)} bytes, expected {want}")
        out.append(block)
        offset += packed
    if offset != len(data):
        raise SpzError(f"streams end at byte {offset}, the file has {len(data)}")
    return (version, n, degree, bits, flags), out + ([b""] if len(out) == 5 else [])


def _unpack_rotations(raw: bytes, version: int) -> np.ndarray:
    if version == 2:
        xyz = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.float32) / np.float32(127.5) - np.float32(1)
        w = np.sqrt(np.maximum(np.float32(0), np.float32(1) - (xyz * xyz).sum(axis=1)))
        return np.column_stack([w, xyz]).astype(np.float32)
    comp = np.frombuffer(raw, "<u4").astype(np.uint32)
    largest = (comp >> np.uint32(30)).astype(np.int64)
    q = np.zeros((comp.size, 4), np.float32)
    rest = comp.copy()
    for i in range(3, -1, -1):  # the last stored component sits in the lowest bits
        here = largest != i
        mag = (rest & np.uint32(_MAG_MASK)).astype(np.float32)
        neg = ((rest >> np.uint32(9)) & np.uint32(1)).astype(bool)
        value = _SQRT1_2 * mag / np.float32(_MAG_MASK)
        q[here, i] = np.where(neg, -value, value)[here]
        rest = np.where(here, rest >> np.uint32(10), rest)
    q[np.arange(comp.size), largest] = np.sqrt(np.maximum(np.float32(0), np.float32(1) - (q * q).sum(axis=1)))
    return q[:, [3, 0, 1, 2]]  # w, x, y, z


def decode_spz(data: bytes | bytearray | memoryview) -> SpzFile:
    """Read an ``.spz`` file (version 2, 3 or 4) back into PLY conventions (float32 arrays).

    Opacities come back as logits of the stored 8-bit alpha, clamped ``1e-6`` away from 0 and 1 so
    that 0 and 255 stay finite. Raises :class:`SpzError` for bytes that are not a complete SPZ file.
    """
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        head, raw = _split_legacy(_gunzip_payload(data))
    elif data[:4] == MAGIC:
        head, raw = _split_v4(data)
    else:
        raise SpzError(f"starts with {data[:4]!r}, neither NGSP nor gzip")
    version, n, degree, bits, flags = head
    pos24 = np.frombuffer(raw[0], np.uint8).reshape(-1, 3).astype(np.int32)
    fixed = pos24[:, 0] | (pos24[:, 1] << 8) | (pos24[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    positions = (fixed.astype(np.float32) * np.float32(position_step(bits))).reshape(n, 3)
    alpha = np.clip(np.frombuffer(raw[1], np.uint8).astype(np.float32) / np.float32(255), _ALPHA_EPS, 1 - _ALPHA_EPS)
    colors = (np.frombuffer(raw[2], np.uint8).astype(np.float32) / np.float32(255) - np.float32(0.5)) / COLOR_SCALE
    scales = np.frombuffer(raw[3], np.uint8).astype(np.float32) / np.float32(16) - np.float32(10)
    sh_rest = None
    if degree:
        dim = (0, 3, 8, 15)[degree]
        sh = (np.frombuffer(raw[5], np.uint8).astype(np.float32) - np.float32(128)) / np.float32(128)
        sh_rest = np.ascontiguousarray(sh.reshape(n, dim, 3).transpose(0, 2, 1).reshape(n, 3 * dim))
    scene = SplatArrays(
        positions=positions, colors=colors.reshape(n, 3), alphas=np.log(alpha / (1 - alpha)).astype(np.float32),
        scales=scales.reshape(n, 3), rotations=_unpack_rotations(raw[4], version), sh_rest=sh_rest,
    )
    return SpzFile(version=version, fractional_bits=bits, antialiased=bool(flags & FLAG_ANTIALIASED), scene=scene)


def arrays_from_gaussians(g: Gaussians) -> SplatArrays:
    """Views of a SHARP-layout scene's columns (no copy); SHARP stores no higher SH bands."""
    v = g.vertices
    return SplatArrays(positions=v[:, XYZ], colors=v[:, F_DC], alphas=v[:, OPACITY], scales=v[:, SCALE],
                       rotations=v[:, ROT])


def encode_gaussians(g: Gaussians, *, version: int = DEFAULT_VERSION, zstd_level: int = DEFAULT_ZSTD_LEVEL) -> bytes:
    """A SHARP-layout scene as ``.spz`` bytes (see :func:`encode_spz`)."""
    return encode_spz(arrays_from_gaussians(g), version=version, zstd_level=zstd_level)


def gaussians_from_spz(data: bytes | bytearray | memoryview, *, focal_px: float, width: int,
                       height: int) -> Gaussians:
    """An ``.spz`` file's scene in SHARP's layout, for a tool that takes a PLY (the gallery's viewer).

    The camera comes from the caller (SPZ stores none); higher SH bands, which SHARP never makes, are
    dropped. Raises :class:`SpzError` for bytes that are not a complete SPZ file."""
    s = decode_spz(data).scene
    return Gaussians.from_attributes(s.positions, s.colors, s.alphas, s.scales, s.rotations,
                                     focal_px=focal_px, width=width, height=height)
