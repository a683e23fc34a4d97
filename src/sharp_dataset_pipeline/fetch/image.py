"""Decode an image file into what the predictor needs: 8-bit RGB pixels and a focal length in pixels.

The file itself is never re-encoded; only the in-memory copy is normalised. Checks run cheapest first:
empty file, not an image, too many pixels (read from the header, before any pixel is decoded), then a
full verify and decode. Each refusal is a ``PermanentError`` with a stable ``reason``:
``empty_file``, ``not_an_image``, ``too_large``, ``truncated_image``, ``corrupt_image``.

Normalisation (SHARP's own loader feeds raw arrays, so palette indices, 16-bit values, CMYK planes and
2-channel images would reach the network as garbage):

- EXIF orientation is applied, so width and height are those of the upright picture;
- palette, grey, CMYK, YCbCr and other modes are converted to RGB by Pillow;
- 16-bit and 32-bit integer images are rescaled to 0-255 (not clipped);
- any alpha channel is composited onto white, so transparent regions become a neutral background
  instead of whatever colour the encoder left under them.

Focal length, following ml-sharp's ``load_rgb`` rule: EXIF ``FocalLengthIn35mmFilm``; else EXIF
``FocalLength`` in mm (times 8.4 when under 10 mm, the phone-sensor rule); else the caller's hint
(35 mm-equivalent); else 30 mm. Then ``f_px = f_mm35 * sqrt(W^2 + H^2) / sqrt(36^2 + 24^2)``.
"""

from __future__ import annotations

import io
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import PermanentError

logger = logging.getLogger(__name__)

DEFAULT_FOCAL_MM35 = 30.0
PHONE_FOCAL_LIMIT_MM = 10.0
PHONE_CROP_FACTOR = 8.4
FILM_DIAGONAL_MM = math.hypot(36.0, 24.0)
# A focal length outside this range is a broken tag, not a lens.
_FOCAL_RANGE_MM = (0.5, 10000.0)

FOCAL_SOURCES = ("exif_35mm", "exif_focal", "exif_focal_phone", "hint", "default")

_EXT_BY_FORMAT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                  "TIFF": "tif", "JPEG2000": "jp2", "PPM": "ppm", "TGA": "tga", "AVIF": "avif",
                  "HEIF": "heic", "ICO": "ico", "SGI": "sgi", "QOI": "qoi"}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError)


@dataclass
class DecodedImage:
    """Upright 8-bit RGB pixels (H x W x 3, C-contiguous) with the focal length used for them."""

    rgb: np.ndarray
    width: int
    height: int
    focal_px: float
    focal_source: str
    format: str


def decode_for_predictor(
    path: Path, *, max_pixels: int, focal_hint_mm35: float = 0.0, label: str = "", data: bytes | None = None
) -> DecodedImage:
    """Decode ``path`` into upright 8-bit RGB plus a focal length in pixels.

    ``data``: the file's bytes when the caller holds them already (the fetch stage does), so the file
    is not read again; else it is read once. Raises ``PermanentError`` (reasons in the module docstring)
    for anything that is not a usable image. Messages name the file as ``label`` (the input the user
    knows, not a staged copy), else by its name.
    """
    path = Path(path)
    try:
        return _decode(path, path.read_bytes() if data is None else data, max_pixels, focal_hint_mm35)
    except PermanentError as exc:
        if not label:
            raise
        text = str(exc)
        if text.startswith(f"{path.name}: "):
            text = text[len(path.name) + 2:]
        raise PermanentError(f"{label}: {text}", reason=exc.reason) from exc


def _decode(path: Path, data: bytes, max_pixels: int, focal_hint_mm35: float) -> DecodedImage:
    if not data:
        raise PermanentError(f"{path.name}: empty file", reason="empty_file")
    # Pillow needs a fresh image after verify(): both opens read the bytes in memory, not the file.
    fmt = _check_header(path, data, max_pixels)
    with _open(path, data, max_pixels) as im:
        try:
            im.load()
            exif = _read_exif(im)
            rgb = to_rgb_array(_upright(im, path))
        except _DECODE_ERRORS as exc:
            raise _decode_error(path, exc) from exc
    height, width = rgb.shape[:2]
    f_mm35, source = choose_focal_mm35(
        _exif_number(exif, ExifTags.Base.FocalLengthIn35mmFilm),
        _exif_number(exif, ExifTags.Base.FocalLength),
        focal_hint_mm35,
    )
    return DecodedImage(
        rgb=rgb, width=width, height=height, focal_px=focal_px_from_mm35(f_mm35, width, height),
        focal_source=source, format=_EXT_BY_FORMAT.get(fmt, fmt.lower()),
    )


def _open(path: Path, data: bytes, max_pixels: int) -> Image.Image:
    """``Image.open`` of ``data`` (``path``'s bytes) with Pillow's refusals mapped to our reasons."""
    _admit_up_to(max_pixels)
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise PermanentError(f"{path.name}: {exc}", reason="too_large") from exc
    except UnidentifiedImageError as exc:
        raise PermanentError(f"{path.name}: not an image Pillow can read", reason="not_an_image") from exc
    except _DECODE_ERRORS as exc:
        raise _decode_error(path, exc) from exc


def _admit_up_to(max_pixels: int) -> None:
    """Let Pillow open what our own limit admits.

    ``Image.open`` warns above ``Image.MAX_IMAGE_PIXELS`` (89.5 M pixels by default) and refuses above
    twice that, with one limit for the whole process, so without this a ``MAX_IMAGE_PIXELS`` setting
    over ~179 M pixels had no effect and photos under our default limit printed a warning. The limit
    only ever rises, to the largest one asked for, and ``_check_header`` then applies the caller's.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _check_header(path: Path, data: bytes, max_pixels: int) -> str:
    """Format and pixel-count guard from the header only; then ``verify()`` the whole file."""
    with _open(path, data, max_pixels) as im:
        fmt = im.format or ""
        width, height = im.size
        if width * height > max_pixels:
            raise PermanentError(
                f"{path.name}: {width}x{height} is over the {max_pixels}-pixel limit", reason="too_large"
            )
        if width <= 0 or height <= 0:
            raise PermanentError(f"{path.name}: image has no pixels", reason="corrupt_image")
        try:
            im.verify()  # must come straight after open: reading EXIF may already decode (PNG)
        except _DECODE_ERRORS as exc:
            raise _decode_error(path, exc) from exc
    return fmt


def _upright(im: Image.Image, path: Path) -> Image.Image:
    """The image turned as its EXIF orientation says; as stored if that tag cannot be read."""
    try:
        return ImageOps.exif_transpose(im)
    except _DECODE_ERRORS + (KeyError,) as exc:
        logger.warning("%s: EXIF orientation unreadable (%s); keeping the stored orientation", path.name, exc)
        return im


def _decode_error(path: Path, exc: BaseException) -> PermanentError:
    text = str(exc).lower()
    truncated = isinstance(exc, EOFError) or "truncated" in text or "premature end" in text
    reason = "truncated_image" if truncated else "corrupt_image"
    return PermanentError(f"{path.name}: {type(exc).__name__}: {exc}", reason=reason)


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any Pillow image as an H x W x 3 uint8 C-contiguous array (alpha composited onto white)."""
    mode = im.mode
    if mode.startswith("I") or mode == "F":
        grey = _scale_to_uint8(np.asarray(im), mode)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        out = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    if mode == "1":
        im = im.convert("L")
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Rescale 16/32-bit integer or float pixels to 0-255, keeping the tonal range instead of clipping."""
    if mode == "F":
        data = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = 1.0 if data.max(initial=0.0) <= 1.0 else 255.0
        return np.clip(np.rint(data / top * 255.0), 0, 255).astype(np.uint8)
    data = values.astype(np.int64)
    lo, hi = int(data.min(initial=0)), int(data.max(initial=0))
    if lo >= 0 and hi <= 65535:
        # 16-bit samples (I;16 or a 16-bit PNG opened as I): full scale is 65535.
        return ((data * 255 + 32767) // 65535).astype(np.uint8)
    # Genuine 32-bit data has no fixed full scale: stretch its own range.
    span = max(hi - lo, 1)
    return ((data - lo) * 255 // span).astype(np.uint8)


def _read_exif(im: Image.Image) -> dict[int, Any]:
    """The focal-length tags, from the Exif IFD where they belong (IFD0 as a fallback)."""
    try:
        exif = im.getexif()
        tags: dict[int, Any] = dict(exif)
        tags.update(exif.get_ifd(ExifTags.IFD.Exif))
    except _DECODE_ERRORS + (KeyError,) as exc:
        # A broken EXIF block must not lose the picture: fall back to the hint or default focal.
        logger.debug("unreadable EXIF ignored: %s", exc)
        return {}
    return tags


def _exif_number(tags: dict[int, Any], tag: int) -> float | None:
    """A positive, finite, plausible number from an EXIF value (int, rational, pair, bytes, str)."""
    value = tags.get(tag)
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            value = value[0] / value[1] if value[1] else None
        elif len(value) >= 1:
            value = value[0]
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore").strip("\x00 ")
    try:
        number = float(value)  # IFDRational, int, float and numeric strings all convert
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(number) or not (_FOCAL_RANGE_MM[0] <= number <= _FOCAL_RANGE_MM[1]):
        return None
    return number


def choose_focal_mm35(
    exif_35mm: float | None, exif_focal_mm: float | None, hint_mm35: float = 0.0
) -> tuple[float, str]:
    """The 35 mm-equivalent focal length and where it came from (one of ``FOCAL_SOURCES``)."""
    if exif_35mm is not None and exif_35mm >= 1.0:
        return float(exif_35mm), "exif_35mm"
    if exif_focal_mm is not None and exif_focal_mm > 0:
        mm35, phone = mm35_from_focal_mm(exif_focal_mm)
        return mm35, "exif_focal_phone" if phone else "exif_focal"
    if hint_mm35 and math.isfinite(hint_mm35) and hint_mm35 > 0:
        return float(hint_mm35), "hint"
    return DEFAULT_FOCAL_MM35, "default"


def mm35_from_focal_mm(focal_mm: float) -> tuple[float, bool]:
    """A real focal length in mm as a 35 mm equivalent, and whether the phone rule (x8.4) applied."""
    if focal_mm < PHONE_FOCAL_LIMIT_MM:
        return focal_mm * PHONE_CROP_FACTOR, True
    return float(focal_mm), False


def focal_px_from_mm35(f_mm35: float, width: int, height: int) -> float:
    """Focal length in pixels from a 35 mm-equivalent one, matched along the diagonal."""
    return f_mm35 * math.hypot(width, height) / FILM_DIAGONAL_MM

