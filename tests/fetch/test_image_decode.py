"""decode_for_predictor(): bad inputs, mode normalisation, EXIF orientation and the focal-length rules."""

from __future__ import annotations

import hashlib
import math
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, TiffImagePlugin

from emulators.files import bad_input_files, encode, png16, smooth_rgb
from sharp_dataset_pipeline.errors import PermanentError
from sharp_dataset_pipeline.fetch.image import (
    DecodedImage,
    choose_focal_mm35,
    decode_for_predictor,
    focal_px_from_mm35,
)

MAX_PIXELS = 50_000_000
BAD = bad_input_files()


def _decode(path: Path, **kwargs) -> DecodedImage:
    return decode_for_predictor(path, max_pixels=kwargs.pop("max_pixels", MAX_PIXELS), **kwargs)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_predictor_ready(img: DecodedImage) -> None:
    assert img.rgb.dtype == np.uint8
    assert img.rgb.shape == (img.height, img.width, 3)
    assert img.rgb.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_decodes_or_fails_with_its_reason(tmp_path: Path, name: str) -> None:
    data, outcome = BAD[name]
    path = _write(tmp_path, name, data)
    before = hashlib.sha256(data).hexdigest()
    if outcome == "ok":
        _assert_predictor_ready(_decode(path))
    else:
        with pytest.raises(PermanentError) as info:
            _decode(path)
        assert info.value.reason == outcome
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # never re-encoded


def test_bad_inputs_fixture_builds_the_set(bad_inputs) -> None:
    built = bad_inputs()
    assert sorted(p.name for p in built) == sorted(BAD)
    assert all(p.is_file() for p in built)


def test_pixel_limit_is_checked_from_the_header(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.jpg", encode(Image.fromarray(smooth_rgb(60, 40)), "JPEG"))
    with pytest.raises(PermanentError) as info:
        _decode(path, max_pixels=60 * 40 - 1)
    assert info.value.reason == "too_large"
    assert _decode(path, max_pixels=60 * 40).width == 60


def test_truncated_png_is_refused(tmp_path: Path) -> None:
    data = encode(Image.fromarray(smooth_rgb(80, 60)), "PNG")
    with pytest.raises(PermanentError) as info:
        _decode(_write(tmp_path, "cut.png", data[: len(data) - 40]))
    assert info.value.reason in ("truncated_image", "corrupt_image")


def test_cmyk_comes_back_as_its_rgb(tmp_path: Path) -> None:
    rgb = smooth_rgb(64, 48, seed=2)
    img = _decode(_write(tmp_path, "c.jpg", encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)))
    _assert_predictor_ready(img)
    assert np.abs(img.rgb.astype(int) - rgb.astype(int)).mean() < 6


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 40000, 65535]], dtype=np.uint16)
    img = _decode(_write(tmp_path, "g16.png", png16(values)))
    assert img.rgb[0, :, 0].tolist() == [0, 1, 156, 255]
    assert (img.rgb[..., 0] == img.rgb[..., 1]).all() and (img.rgb[..., 1] == img.rgb[..., 2]).all()


def test_16_bit_rgb_is_8_bit_rgb(tmp_path: Path) -> None:
    values = np.zeros((2, 3, 3), np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32896, 0
    img = _decode(_write(tmp_path, "c16.png", png16(values)))
    assert img.rgb[0, 0].tolist() == [255, 128, 0]


def test_palette_gives_colours_not_indices(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2, 1])
    img = _decode(_write(tmp_path, "p.png", encode(pal, "PNG")))
    assert img.rgb[0].tolist() == [[10, 20, 30], [200, 100, 50], [0, 255, 0], [200, 100, 50]]


def test_alpha_is_composited_onto_white(tmp_path: Path) -> None:
    la = Image.new("LA", (3, 1))
    la.putdata([(40, 255), (40, 0), (40, 128)])
    img = _decode(_write(tmp_path, "la.png", encode(la, "PNG")))
    assert img.rgb[0, :, 0].tolist() == [40, 255, round(40 * 128 / 255 + 255 * 127 / 255)]
    rgba = Image.new("RGBA", (2, 1))
    rgba.putdata([(255, 0, 0, 255), (255, 0, 0, 0)])
    img = _decode(_write(tmp_path, "rgba.png", encode(rgba, "PNG")))
    assert img.rgb[0].tolist() == [[255, 0, 0], [255, 255, 255]]


def test_exif_orientation_6_rotates_to_upright(tmp_path: Path) -> None:
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:10, :10] = (255, 0, 0)  # red top-left in the stored frame
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    path = _write(tmp_path, "rot.jpg", encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes()))
    img = _decode(path)
    assert (img.width, img.height) == (40, 60)
    # Orientation 6: the stored frame is turned 90 degrees clockwise for display, top-left -> top-right.
    assert img.rgb[2, -3].tolist()[0] > 200 and img.rgb[2, 2].tolist()[0] < 50


def test_format_comes_from_content_not_name(tmp_path: Path) -> None:
    png_named_jpg = _write(tmp_path, "x.jpg", encode(Image.fromarray(smooth_rgb()), "PNG"))
    assert _decode(png_named_jpg).format == "png"
    webp = _write(tmp_path, "y.bin", encode(Image.fromarray(smooth_rgb()), "WEBP"))
    assert _decode(webp).format == "webp"


@pytest.mark.parametrize(
    ("exif_35", "exif_mm", "hint", "expected"),
    [
        (28.0, 4.2, 50.0, (28.0, "exif_35mm")),
        (None, 4.25, 50.0, (4.25 * 8.4, "exif_focal_phone")),
        (None, 50.0, 24.0, (50.0, "exif_focal")),
        (None, 10.0, 0.0, (10.0, "exif_focal")),
        (0.5, 35.0, 0.0, (35.0, "exif_focal")),  # a 35 mm value under 1 is ignored
        (None, None, 24.0, (24.0, "hint")),
        (None, None, 0.0, (30.0, "default")),
        (None, None, -5.0, (30.0, "default")),
        (None, None, float("nan"), (30.0, "default")),
    ],
)
def test_focal_rules(exif_35, exif_mm, hint, expected) -> None:
    assert choose_focal_mm35(exif_35, exif_mm, hint) == pytest.approx(expected)


def test_focal_px_uses_the_diagonal() -> None:
    assert focal_px_from_mm35(30.0, 640, 480) == pytest.approx(30.0 * 800.0 / math.hypot(36, 24))
    assert focal_px_from_mm35(30.0, 480, 640) == focal_px_from_mm35(30.0, 640, 480)


def _with_exif(tmp_path: Path, name: str, *, ifd0: dict | None = None, exif_ifd: dict | None = None) -> Path:
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    for tag, value in (exif_ifd or {}).items():
        sub[tag] = value
    data = encode(Image.fromarray(smooth_rgb(64, 48)), "JPEG", exif=exif.tobytes())
    return _write(tmp_path, name, data)


F35, FMM = ExifTags.Base.FocalLengthIn35mmFilm, ExifTags.Base.FocalLength


@pytest.mark.parametrize(
    ("ifd0", "exif_ifd", "hint", "mm35", "source"),
    [
        ({}, {F35: 26, FMM: TiffImagePlugin.IFDRational(17, 4)}, 0.0, 26.0, "exif_35mm"),
        ({}, {FMM: TiffImagePlugin.IFDRational(17, 4)}, 0.0, 4.25 * 8.4, "exif_focal_phone"),
        ({}, {FMM: TiffImagePlugin.IFDRational(85, 1)}, 0.0, 85.0, "exif_focal"),
        ({}, {FMM: TiffImagePlugin.IFDRational(0, 0)}, 40.0, 40.0, "hint"),
        ({}, {F35: 0, FMM: TiffImagePlugin.IFDRational(0, 0)}, 0.0, 30.0, "default"),
        ({}, {F35: "abc"}, 0.0, 30.0, "default"),
        ({F35: 35}, {}, 0.0, 35.0, "exif_35mm"),  # misplaced in IFD0: still read
        ({}, {}, 0.0, 30.0, "default"),
    ],
)
def test_focal_from_real_exif(tmp_path: Path, ifd0, exif_ifd, hint, mm35, source) -> None:
    img = _decode(_with_exif(tmp_path, "f.jpg", ifd0=ifd0, exif_ifd=exif_ifd), focal_hint_mm35=hint)
    assert img.focal_source == source
    assert img.focal_px == pytest.approx(focal_px_from_mm35(mm35, 64, 48))


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says ``width`` x ``height``: opened from its header, never decodable."""
    data = bytearray(encode(Image.fromarray(smooth_rgb(8, 8)), "PNG"))
    ihdr = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


@pytest.fixture
def pillow_default_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from Pillow's own limit (decoding raises it for the whole process)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)


@pytest.mark.usefixtures("pillow_default_limit")
def test_a_pixel_limit_above_pillows_own_is_the_one_that_applies(tmp_path: Path) -> None:
    # 15,000 x 15,000 = 225 M pixels: over twice Pillow's default limit, under ours, so it must get past
    # the size checks and fail only for what it is, a file that ends after its header.
    path = _write(tmp_path, "huge.png", _png_claiming(15_000, 15_000))
    with pytest.raises(PermanentError) as info:
        _decode(path, max_pixels=300_000_000)
    assert info.value.reason in ("truncated_image", "corrupt_image")
    with pytest.raises(PermanentError) as info:
        _decode(path, max_pixels=200_000_000)
    assert info.value.reason == "too_large"


@pytest.mark.usefixtures("pillow_default_limit")
def test_a_photo_under_our_limit_gives_no_pillow_bomb_warning(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.png", _png_claiming(10_000, 10_000))  # 100 M: over Pillow's 89.5 M
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(PermanentError) as info:
            _decode(path, max_pixels=120_000_000)
    assert info.value.reason in ("truncated_image", "corrupt_image")
