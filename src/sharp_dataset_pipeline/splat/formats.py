"""The publishable formats of one item, made and validated before anything is published.

``make_extra_files`` is the post-process entry point: from the item's Gaussians and its SHARP
``.ply`` (already written and validated) it makes every other format ``PUBLISH_FORMATS`` asks for,
checks each file, and returns them as :class:`ExtraFile` records. A file that fails its check
raises ``PermanentError(reason="invalid_<kind>")`` and is never returned; a conversion that times
out raises ``TransientError``. Files made for an item that then fails are removed.

Formats (``PUBLISH_FORMATS`` names):

- ``ply``: SHARP's own file, written by the post-process stage (nothing is made here). It is the
  only format that keeps SHARP's metadata elements (camera intrinsics, image size, disparity, ...);
  the index row keeps the camera too (width, height, focal length), so a dataset without ``ply``
  still knows each splat's camera.
- ``spz``: written in process from the Gaussians (``spz.py``; no Node needed), version
  ``spz_version`` (``SPZ_VERSION``: 4, zstd streams, the default; 3, one gzip stream, for older
  viewers). A scene SPZ cannot hold (non-finite values, coordinates beyond its fixed-point range)
  fails the item with ``PermanentError(reason="spz_unencodable")``.
- ``sog``, ``compressed.ply``, ``html``: made by splat-transform from the SHARP ``.ply``
  (see ``convert.py``). ``html`` is the self-contained SuperSplat viewer page, its camera placed at
  the photo's own viewpoint.
- ``small.ply``: the ``small_ply_keep`` most visible Gaussians (``filter.top_visible``), SHARP
  layout with metadata, checked with our own PLY reader.
- ``preview``: the CPU render from the photo's camera (``preview.py``), WebP or PNG.

Checks (cheap, pure Python, no decoding of the splat data): the container's magic bytes, every
size and count its header promises against the file size, and the Gaussian count against the
source's. ``deep_check=True`` also reads each splat-transform output back through
``splat-transform --info json`` (0.3 to 2 s per 1.2M-Gaussian file), and decodes the ``.spz`` with
our own reader.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, PermanentError
from .convert import DEFAULT_TIMEOUT_S, SplatTransform, convert, locate_splat_transform, read_info
from .filter import top_visible
from .gaussians import XYZ, Gaussians
from .ply import InvalidSplat, validate_ply, write_ply
from .preview import choose_camera, render_preview, save_preview
from .spz import SpzError, decode_spz, encode_gaussians

logger = logging.getLogger(__name__)

FORMAT_NAMES: tuple[str, ...] = ("ply", "spz", "sog", "compressed.ply", "html", "small.ply", "preview")
# Cheap by default (well under a second of CPU per SHARP item). The converted formats cost 2 to 20 s
# of CPU per item each (benchmarks/bench_formats.py): opt in where cores keep up with the predictor.
DEFAULT_FORMATS: tuple[str, ...] = ("ply", "preview")
CONVERTED = frozenset({"sog", "compressed.ply", "html"})  # made by splat-transform; spz is made in process
_ALIASES = {"compressed": "compressed.ply", "compressed_ply": "compressed.ply", "small": "small.ply",
            "small_ply": "small.ply", "thumbnail": "preview"}
KINDS = {"spz": "spz", "sog": "sog", "compressed.ply": "compressed_ply", "html": "html",
         "small.ply": "small_ply", "preview": "preview"}
PREVIEW_EXTS = ("webp", "png", "jpg")
_MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "jpg": b"\xff\xd8\xff"}
_CHUNK = 256  # Gaussians per chunk of a compressed PLY
_SPARSE_FILL = 0.9  # sparse scenes: render where splats are 0.9 px apart, so no pixel is left empty
_PLY_TYPE_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2,
                   "uint16": 2, "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4,
                   "double": 8, "float64": 8}
_BOOTSTRAP = re.compile(rb'<script type="application/json" id="sse-bootstrap">(.*?)</script>', re.S)
_DATA_URL = re.compile(r"^data:[\w.+/-]*;base64,")


def parse_formats(text: str) -> tuple[str, ...]:
    """``PUBLISH_FORMATS`` (comma or space separated, e.g. ``"ply,spz"``) → canonical names, in canonical order.

    Leading dots and case are ignored; ``compressed`` and ``small`` are accepted for ``compressed.ply``
    and ``small.ply``. Raises ``ConfigError`` for an unknown or empty list.
    """
    names = [w.strip().lower().lstrip(".") for w in re.split(r"[,\s]+", text or "") if w.strip()]
    if not names:
        raise ConfigError(f"PUBLISH_FORMATS is empty; choose from {', '.join(FORMAT_NAMES)}")
    chosen = set()
    for name in names:
        name = _ALIASES.get(name, name)
        if name not in FORMAT_NAMES:
            raise ConfigError(f"unknown format {name!r} in PUBLISH_FORMATS; choose from {', '.join(FORMAT_NAMES)}")
        chosen.add(name)
    return tuple(f for f in FORMAT_NAMES if f in chosen)


def needs_splat_transform(formats: tuple[str, ...]) -> bool:
    """Whether any of ``formats`` is made by splat-transform (so it must be installed)."""
    return any(f in CONVERTED for f in formats)


@dataclass(frozen=True)
class FormatOptions:
    """What to make per item. ``formats`` comes from :func:`parse_formats`."""

    formats: tuple[str, ...] = DEFAULT_FORMATS
    preview_long_side: int = 512
    preview_ext: str = "webp"
    small_ply_keep: int = 20000
    timeout_s: float = DEFAULT_TIMEOUT_S
    splat_transform_bin: str = ""
    spz_version: int = 4
    deep_check: bool = False
    sog_workers: int = 0  # splat-transform's --max-workers for SOG/HTML; 0 = its default

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMAT_NAMES]
        if unknown:
            raise ConfigError(f"unknown formats {unknown}; choose from {', '.join(FORMAT_NAMES)}")
        if self.preview_ext not in PREVIEW_EXTS:
            raise ConfigError(f"preview_ext must be one of {PREVIEW_EXTS}, got {self.preview_ext!r}")
        if self.spz_version not in (3, 4):
            raise ConfigError(f"spz_version must be 3 or 4, got {self.spz_version}")
        if self.preview_long_side < 16 or self.small_ply_keep < 1 or self.timeout_s <= 0:
            raise ConfigError("preview_long_side >= 16, small_ply_keep >= 1 and timeout_s > 0 are required")


@dataclass(frozen=True)
class ExtraFile:
    """One produced, validated file. ``ext`` is the suffix after ``<id>.`` in the published name
    (``spz``, ``compressed.ply``, ``preview.webp``, ...); ``count`` is its number of Gaussians (0 for a preview)."""

    kind: str
    ext: str
    local_path: Path
    size: int
    sha256: str
    count: int = 0


def ext_for(fmt: str, opts: FormatOptions) -> str:
    """The published suffix of format ``fmt``."""
    return f"preview.{opts.preview_ext}" if fmt == "preview" else fmt


def extra_files_json(entries: list[tuple[ExtraFile, str]]) -> str:
    """``IndexRow.extra_files`` for ``(file, repo path)`` pairs: a JSON list of kind, path, size, sha256."""
    return json.dumps([{"kind": f.kind, "path": repo_path, "size": f.size, "sha256": f.sha256}
                       for f, repo_path in entries], sort_keys=True)


# ---------------------------------------------------------------------------------------------
# structural checks: each returns the Gaussian count the file declares, or raises PermanentError


def _invalid(kind: str, path: Path | str, why: str) -> PermanentError:
    return PermanentError(f"{Path(path).name}: not a valid {kind} file: {why}", reason=f"invalid_{kind}")


def check_spz(path: Path) -> int:
    """SPZ v4 (``NGSP`` header + table of zstd streams, sizes checked) or v2/v3 (gzip); returns the count."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _invalid("spz", path, f"gzip stream is damaged ({exc})") from exc
        return _check_spz_v3(path, data)
    if len(data) < 32 or data[:4] != b"NGSP":
        raise _invalid("spz", path, f"starts with {data[:4]!r}, not NGSP or gzip")
    version, count, sh_degree, _bits, _flags, streams, toc = struct.unpack_from("<IIBBBBI", data, 4)
    if version != 4:
        raise _invalid("spz", path, f"NGSP header says version {version}; uncompressed headers are v4")
    if sh_degree > 3 or streams != (5 if sh_degree == 0 else 6) or toc < 32:
        raise _invalid("spz", path, f"header: sh degree {sh_degree}, {streams} streams, table at {toc}")
    sh = (0, 9, 24, 45)[sh_degree]
    want = [9 * count, count, 3 * count, 3 * count, 4 * count, sh * count][:streams]
    offset = toc + 16 * streams
    if offset > len(data):
        raise _invalid("spz", path, "truncated inside the stream table")
    for i, expected in enumerate(want):
        packed, unpacked = struct.unpack_from("<QQ", data, toc + 16 * i)
        if unpacked != expected:
            raise _invalid("spz", path, f"stream {i} holds {unpacked} bytes, {count} Gaussians need {expected}")
        if data[offset:offset + 4] != b"\x28\xb5\x2f\xfd":
            raise _invalid("spz", path, f"stream {i} is not a zstd frame")
        offset += packed
    if offset != len(data):
        raise _invalid("spz", path, f"streams end at byte {offset}, the file has {len(data)}")
    return count


def _check_spz_v3(path: Path, raw: bytes) -> int:
    if len(raw) < 16 or raw[:4] != b"NGSP":
        raise _invalid("spz", path, "gzip payload does not start with NGSP")
    version, count, sh_degree = struct.unpack_from("<IIB", raw, 4)
    if version not in (2, 3) or sh_degree > 3:
        raise _invalid("spz", path, f"gzip payload says version {version}, sh degree {sh_degree}")
    per = 9 + 1 + 3 + 3 + (4 if version == 3 else 3) + (0, 9, 24, 45)[sh_degree]
    if len(raw) < 16 + per * count:
        raise _invalid("spz", path, f"payload has {len(raw)} bytes, {count} Gaussians need {16 + per * count}")
    return count


def _check_sog_zip(data: bytes, label: str, kind: str = "sog") -> int:
    if data[:4] != b"PK\x03\x04":
        raise _invalid(kind, label, f"starts with {data[:4]!r}, not a zip archive")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            bad = z.testzip()  # CRC of every member: catches truncation and corruption
            if bad is not None:
                raise _invalid(kind, label, f"member {bad} fails its CRC")
            meta = json.loads(z.read("meta.json"))
            names = set(z.namelist())
            listed = [f for part in meta.values() if isinstance(part, dict) for f in part.get("files", [])]
            for name in listed:
                if name not in names:
                    raise _invalid(kind, label, f"meta.json lists {name}, which is missing")
                head = z.read(name)[:12]
                if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
                    raise _invalid(kind, label, f"{name} is not a WebP image")
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
        raise _invalid(kind, label, f"{type(exc).__name__}: {exc}") from exc
    count = meta.get("count")
    if not isinstance(count, int) or count < 0 or not listed:
        raise _invalid(kind, label, "meta.json has no Gaussian count or no files")
    return count


def check_sog(path: Path) -> int:
    """A bundled SOG: a zip whose CRCs hold, whose ``meta.json`` lists WebP members; returns the count."""
    return _check_sog_zip(Path(path).read_bytes(), str(path))


def check_html(path: Path) -> int:
    """splat-transform's single-page viewer: its bootstrap JSON embeds the scene as a base64 SOG."""
    data = Path(path).read_bytes()
    if not data.lstrip()[:15].lower().startswith(b"<!doctype html") or b"</html>" not in data[-64:]:
        raise _invalid("html", path, "not a complete HTML document")
    match = _BOOTSTRAP.search(data)
    if match is None:
        raise _invalid("html", path, "no sse-bootstrap settings block")
    try:
        boot = json.loads(match.group(1))
        url = boot["contentUrl"]
        prefix = _DATA_URL.match(url)
        if prefix is None:
            raise _invalid("html", path, "the scene is not embedded (contentUrl is not a data: URL)")
        sog = base64.b64decode(url[prefix.end():], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise _invalid("html", path, f"bootstrap block: {type(exc).__name__}: {exc}") from exc
    return _check_sog_zip(sog, str(path), kind="html")


def check_compressed_ply(path: Path) -> int:
    """PlayCanvas compressed PLY: ``chunk`` element (one per 256 Gaussians), ``vertex``, optional ``sh``;
    file size equal to what the header promises; returns the vertex count."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16384)
    end = head.find(b"end_header\n")
    if not head.startswith(b"ply\n") or end < 0:
        raise _invalid("compressed_ply", path, "no PLY header")
    lines = head[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise _invalid("compressed_ply", path, "not binary little-endian")
    counts: dict[str, int] = {}
    row: dict[str, int] = {}
    current = ""
    for line in lines:
        words = line.split()
        if words[:1] == ["element"] and len(words) == 3 and words[2].isdigit():
            current = words[1]
            counts[current], row[current] = int(words[2]), 0
        elif words[:1] == ["property"] and len(words) == 3 and current and words[1] in _PLY_TYPE_SIZES:
            row[current] += _PLY_TYPE_SIZES[words[1]]
        elif words[:1] == ["property"]:
            raise _invalid("compressed_ply", path, f"unexpected header line {line!r}")
    if list(counts)[:2] != ["chunk", "vertex"]:
        raise _invalid("compressed_ply", path, f"elements are {list(counts)}, expected chunk, vertex[, sh]")
    n = counts["vertex"]
    if counts["chunk"] != math.ceil(n / _CHUNK):
        raise _invalid("compressed_ply", path, f"{counts['chunk']} chunks for {n} Gaussians")
    expected = end + len(b"end_header\n") + sum(counts[e] * row[e] for e in counts)
    if size != expected:
        raise _invalid("compressed_ply", path, f"header promises {expected} bytes, the file has {size}")
    return n


def check_preview(path: Path, width: int, height: int, ext: str) -> None:
    """The image's magic bytes match ``ext`` and it decodes to ``width`` x ``height``."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(12)
    ok = head[:4] == b"RIFF" and head[8:12] == b"WEBP" if ext == "webp" else head.startswith(_MAGIC[ext])
    if not ok:
        raise _invalid("preview", path, f"does not start like a {ext} file ({head[:4]!r})")
    try:
        with Image.open(path) as im:
            im.load()
            got = im.size
    except OSError as exc:
        raise _invalid("preview", path, f"does not decode: {exc}") from exc
    if got != (width, height):
        raise _invalid("preview", path, f"is {got[0]}x{got[1]}, rendered {width}x{height}")


_STRUCTURAL: dict[str, Callable[[Path], int]] = {
    "spz": check_spz, "sog": check_sog, "compressed.ply": check_compressed_ply, "html": check_html,
}


# ---------------------------------------------------------------------------------------------
# making the files


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def viewer_settings(g: Gaussians) -> dict:
    """SuperSplat viewer settings (schema version 2) with the camera at the photo's viewpoint.

    SHARP's scene is in OpenCV axes with the camera at the origin looking along +z. The viewer shows
    PLY data turned 180 degrees about z, which keeps +z ahead and makes y-down read as up, so a camera
    at the origin aimed at the median depth looks through the photo. ``fov`` is the photo's vertical
    field of view (the viewer's default camera, at (2, 2, -2) aimed at the origin, would start
    behind the scene).
    """
    z = g.vertices[:, XYZ][:, 2]
    depth = float(np.median(z)) if z.size else 1.0
    if not math.isfinite(depth) or depth <= 0:
        depth = 1.0
    fov = 60.0
    if g.focal_px > 0 and g.height > 0:
        fov = math.degrees(2.0 * math.atan(g.height / (2.0 * g.focal_px)))
    off = {"enabled": False}
    return {
        "version": 2, "tonemapping": "linear", "highPrecisionRendering": False,
        "background": {"color": [0, 0, 0]},
        "postEffectSettings": {
            "sharpness": {**off, "amount": 0},
            "bloom": {**off, "intensity": 0.1, "blurLevel": 2},
            "grading": {**off, "brightness": 1, "contrast": 1, "saturation": 1, "tint": [1, 1, 1]},
            "vignette": {**off, "intensity": 0.5, "inner": 0.3, "outer": 0.75, "curvature": 1},
            "fringing": {**off, "intensity": 0.5},
        },
        "animTracks": [],
        "cameras": [{"initial": {"position": [0, 0, 0], "target": [0, 0, round(depth, 4)], "fov": round(fov, 2)}}],
        "annotations": [], "startMode": "default",
    }


def render_item_preview(g: Gaussians, long_side: int) -> np.ndarray:
    """The preview of one item: ``long_side`` px on the long side, from the photo's camera.

    A scene with at least as many Gaussians as preview pixels (SHARP's 1.2M at 512 px) is drawn in
    the renderer's points mode. A sparser one (the planar stand-in, a filtered splat) would leave
    most pixels empty in points mode, so it is drawn at the resolution its splats fill (a little
    below one splat per pixel) and scaled up: cheaper and closer to the photo than spreading each
    splat over a footprint over a black background.
    """
    cam = choose_camera(g, long_side)
    pixels = cam.width * cam.height
    if g.count >= pixels:
        return render_preview(g, long_side, camera=cam)
    small_side = max(16, math.floor(long_side * math.sqrt(g.count / pixels) * _SPARSE_FILL))
    img = render_preview(g, small_side)
    return np.asarray(Image.fromarray(img).resize((cam.width, cam.height), Image.Resampling.BICUBIC))


def _convert_one(fmt: str, g: Gaussians, src: Path, dst: Path, opts: FormatOptions, tool: SplatTransform,
                 what: str) -> None:
    options: list[str] = []
    if fmt in ("sog", "html") and opts.sog_workers > 0:
        options += ["--max-workers", str(opts.sog_workers)]
    settings_path = None
    if fmt == "html":
        settings_path = dst.with_name(f".tmp-{secrets.token_hex(4)}-{dst.stem}.settings.json")
        settings_path.write_text(json.dumps(viewer_settings(g)), encoding="utf-8")
        options += ["--viewer-settings", str(settings_path.resolve())]
    try:
        convert(tool, src, dst, options=options, timeout_s=opts.timeout_s, what=what)
    finally:
        if settings_path is not None:
            settings_path.unlink(missing_ok=True)


def _check_count(kind: str, path: Path, got: int, expected: int, how: str) -> None:
    if got != expected:
        raise _invalid(kind, path, f"{how} says {got} Gaussians, the source has {expected}")


def _make_spz(g: Gaussians, dst: Path, opts: FormatOptions) -> int:
    try:
        data = encode_gaussians(g, version=opts.spz_version)
    except SpzError as exc:
        raise PermanentError(f"{dst.name}: the scene cannot be stored as SPZ: {exc}", reason="spz_unencodable") from exc
    tmp = dst.with_name(f".tmp-{secrets.token_hex(4)}-{dst.name}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    count = check_spz(dst)
    _check_count("spz", dst, count, g.count, "its header")
    if opts.deep_check:
        try:
            decoded = decode_spz(dst.read_bytes()).scene.count
        except SpzError as exc:
            raise _invalid("spz", dst, str(exc)) from exc
        _check_count("spz", dst, decoded, g.count, "its decoded streams")
    return count


def _make_one(fmt: str, g: Gaussians, ply_path: Path, item_id: str, out_dir: Path, opts: FormatOptions,
              tool: SplatTransform | None) -> ExtraFile:
    kind = KINDS[fmt]
    ext = ext_for(fmt, opts)
    dst = out_dir / f"{item_id}.{ext}"
    count = 0
    if fmt == "preview":
        img = render_item_preview(g, opts.preview_long_side)
        save_preview(img, dst)
        check_preview(dst, img.shape[1], img.shape[0], opts.preview_ext)
    elif fmt == "small.ply":
        small = top_visible(g, opts.small_ply_keep)
        write_ply(small, dst)
        try:
            count = validate_ply(dst).count
        except InvalidSplat as exc:
            raise _invalid(kind, dst, str(exc)) from exc
        _check_count(kind, dst, count, min(opts.small_ply_keep, g.count), "the file")
    elif fmt == "spz":
        count = _make_spz(g, dst, opts)
    else:
        assert tool is not None  # make_extra_files locates it for converted formats
        _convert_one(fmt, g, ply_path, dst, opts, tool, what=f"item {item_id}: .{ext}")
        count = _STRUCTURAL[fmt](dst)
        _check_count(kind, dst, count, g.count, "its header")
        if opts.deep_check and fmt != "html":  # --info cannot read .html
            info = read_info(tool, dst, timeout_s=opts.timeout_s)
            _check_count(kind, dst, int(info.get("numGaussians", -1)), g.count, "splat-transform --info")
    size, sha = _hash_file(dst)
    return ExtraFile(kind=kind, ext=ext, local_path=dst, size=size, sha256=sha, count=count)


def make_extra_files(
    g: Gaussians, ply_path: Path, item_id: str, out_dir: Path, opts: FormatOptions
) -> list[ExtraFile]:
    """Make and check every format of ``opts.formats`` except ``ply`` for one item, in ``out_dir``.

    ``ply_path`` is the item's SHARP ``.ply`` (splat-transform's input); ``g`` its Gaussians (for the
    small PLY, the preview and the expected counts). Files are named ``<item_id>.<ext>``. Raises
    ``PermanentError(reason="invalid_<kind>")`` for a file that fails its check and
    ``splat_transform_failed`` for a conversion that fails, ``TransientError`` for a timeout or a
    killed conversion, ``ConfigError`` when splat-transform is needed and missing; on any error the
    files already made for this item are removed.
    """
    wanted = [f for f in opts.formats if f != "ply"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tool = locate_splat_transform(opts.splat_transform_bin) if needs_splat_transform(tuple(wanted)) else None
    made: list[ExtraFile] = []
    try:
        for fmt in wanted:
            made.append(_make_one(fmt, g, Path(ply_path), item_id, out_dir, opts, tool))
    except BaseException:
        for f in made:
            f.local_path.unlink(missing_ok=True)
        for fmt in wanted:  # the one that failed may have left its output behind
            (out_dir / f"{item_id}.{ext_for(fmt, opts)}").unlink(missing_ok=True)
        raise
    logger.debug("item %s: made %s", item_id, ", ".join(f"{f.ext} ({f.size} B)" for f in made))
    return made
