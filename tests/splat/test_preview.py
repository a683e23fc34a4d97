"""CPU previews: a plane of splats renders back to its photo, occlusion, compositing, cameras, saving."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from sharp_dataset_pipeline.splat.gaussians import Gaussians, f_dc_from_srgb, logit
from sharp_dataset_pipeline.splat.ply import encode_ply, ply_header, read_ply
from sharp_dataset_pipeline.splat.preview import render_preview, save_preview


def _photo(h: int = 48, w: int = 64) -> np.ndarray:
    """A synthetic photo: colour gradients, a red disc and a green square."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx / (w - 1), yy / (h - 1), 0.5 + 0.5 * np.sin(xx / 5.0)], axis=-1)
    img[(xx - w * 0.3) ** 2 + (yy - h * 0.5) ** 2 < (h * 0.2) ** 2] = (1.0, 0.0, 0.0)
    img[h // 4 : h // 2, int(w * 0.6) : int(w * 0.8)] = (0.0, 1.0, 0.0)
    return np.round(img * 255).astype(np.uint8)


def _plane(photo: np.ndarray, focal: float, z: float = 3.0, alpha: float = 0.999) -> Gaussians:
    """One splat per pixel, at depth z, exactly behind its pixel centre for a pinhole of focal ``focal``."""
    h, w, _ = photo.shape
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (uu + 0.5 - w / 2) * z / focal
    y = (vv + 0.5 - h / 2) * z / focal
    xyz = np.stack([x, y, np.full_like(x, z)], axis=-1).reshape(-1, 3)
    n = xyz.shape[0]
    return Gaussians.from_attributes(
        xyz,
        f_dc_from_srgb(photo.reshape(-1, 3) / 255.0),
        logit(np.full(n, alpha)),
        np.full((n, 3), np.log(0.5 * z / focal), dtype=np.float32),
        np.tile(np.array([1, 0, 0, 0], dtype=np.float32), (n, 1)),
        focal_px=focal,
        width=w,
        height=h,
    )


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_a_plane_made_from_a_photo_renders_back_to_that_photo():
    photo = _photo()
    img = render_preview(_plane(photo, focal=70.0), long_side=64)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    assert _mad(img, photo) < 1.0


def test_smaller_previews_scale_the_camera():
    photo = _photo()
    img = render_preview(_plane(photo, focal=70.0), long_side=32)
    assert img.shape == (24, 32, 3)
    # Four equally deep, nearly opaque splats per preview pixel: the first in file order shows.
    assert _mad(img, photo[::2, ::2]) < 1.0


def test_the_image_is_not_flipped_or_transposed():
    photo = np.zeros((30, 40, 3), np.uint8)
    photo[:5, :8] = (255, 255, 0)  # top-left corner yellow
    img = render_preview(_plane(photo, focal=50.0), long_side=40)
    assert _mad(img[2, 3], np.array([255, 255, 0])) < 1
    assert img[27, 37].tolist() == [0, 0, 0]


def _pair(first: tuple, second: tuple, alpha_first: float, alpha_second: float) -> Gaussians:
    """Two splats on the optical axis of a 9×9 camera, given as (z, rgb)."""
    xyz = np.array([[0, 0, first[0]], [0, 0, second[0]]], np.float32)
    rgb = np.array([first[1], second[1]], np.float32)
    return Gaussians.from_attributes(
        xyz, f_dc_from_srgb(rgb), logit(np.array([alpha_first, alpha_second])),
        np.full((2, 3), -6.0, np.float32), np.tile(np.float32([1, 0, 0, 0]), (2, 1)),
        focal_px=10.0, width=9, height=9,
    )


def test_a_near_red_splat_hides_a_far_blue_one_listed_first():
    g = _pair((5.0, (0, 0, 1)), (1.0, (1, 0, 0)), alpha_first=0.9999, alpha_second=0.9999)
    img = render_preview(g, long_side=9)
    assert img[4, 4].tolist() == [255, 0, 0]
    assert img[0, 0].tolist() == [0, 0, 0]


def test_front_to_back_compositing_math():
    # Near red at alpha 0.6 over far blue at alpha ~1 over a white background:
    # 0.6·red + 0.4·(1·blue) + ~0·white.
    g = _pair((1.0, (1, 0, 0)), (2.0, (0, 0, 1)), alpha_first=0.6, alpha_second=0.999999)
    img = render_preview(g, long_side=9, background=(255, 255, 255))
    assert img[4, 4].tolist() == [153, 0, 102]
    # Swap the depths: now blue is in front and hides red completely.
    g2 = _pair((3.0, (1, 0, 0)), (2.0, (0, 0, 1)), alpha_first=0.6, alpha_second=0.999999)
    assert render_preview(g2, long_side=9)[4, 4].tolist() == [0, 0, 255]
    # A pixel only partly covered lets the background through: 0.6·red + 0.4·white.
    g3 = _pair((1.0, (1, 0, 0)), (-2.0, (0, 0, 1)), alpha_first=0.6, alpha_second=0.999)
    assert render_preview(g3, long_side=9, background=(255, 255, 255))[4, 4].tolist() == [255, 102, 102]


def test_automatic_camera_frames_points_without_intrinsics():
    photo = _photo(64, 64)
    g = _plane(photo, focal=80.0)
    g.focal_px, g.width, g.height = 0.0, 0, 0  # as read from a vertex-only file
    g.vertices[:, 0] += 10.0  # off the optical axis: the camera must find it
    img = render_preview(g, long_side=48)  # more splats than pixels: no gaps between them
    assert img.shape == (48, 48, 3)
    lit = np.argwhere(img.sum(axis=2) > 0)
    (top, left), (bottom, right) = lit.min(axis=0), lit.max(axis=0)
    h, w = img.shape[:2]
    assert abs((left + right) / 2 - w / 2) < w * 0.1 and abs((top + bottom) / 2 - h / 2) < h * 0.1
    assert right - left > 0.5 * w and bottom - top > 0.5 * h  # fills most of the frame
    assert top > 0 and left > 0 and bottom < h - 1 and right < w - 1  # and is not cut off
    # The red disc of the photo is on the left half of the render too.
    disc = img[h // 2 - 2 : h // 2 + 3, left + int(0.3 * (right - left)) - 2 :][:, :5].reshape(-1, 3)
    assert disc[:, 0].min() > 200 and disc[:, 1].max() < 60


def test_vertex_only_ply_previews_with_the_automatic_camera():
    g = _plane(_photo(16, 16), focal=20.0)
    data = encode_ply(g)
    head = ply_header(g.count)
    vertex_only = head[: head.index(b"element extrinsic")] + b"end_header\n"
    body = data[len(head) : len(head) + g.count * 56]
    loaded = read_ply(vertex_only + body, allow_missing_metadata=True)
    img = render_preview(loaded, long_side=64)
    assert img.shape == (64, 64, 3) and img.any()


def test_nothing_visible_gives_the_background():
    g = _pair((-1.0, (1, 0, 0)), (-2.0, (0, 1, 0)), 0.9, 0.9)  # both behind the camera
    img = render_preview(g, long_side=9, background=(10, 20, 30))
    assert (img == np.array([10, 20, 30], np.uint8)).all()


def test_footprints_fill_the_gaps_of_a_sparse_scene():
    photo = np.full((32, 32, 3), 200, np.uint8)
    sparse = _plane(photo, focal=40.0)
    sparse.vertices = sparse.vertices[::9].copy()  # keep one splat in nine, scales still ~1 px
    sparse.vertices[:, 7:10] = np.log(1.5 * 3.0 / 40.0)  # 1.5 px std-dev at the preview scale
    points = render_preview(sparse, long_side=32)
    spread = render_preview(sparse, long_side=32, max_radius=2)
    assert (points.sum(axis=2) > 0).mean() < 0.2
    assert (spread.sum(axis=2) > 0).mean() > 0.9


@pytest.mark.parametrize("name,fmt", [("p.png", "PNG"), ("p.webp", "WEBP"), ("p.JPG", "JPEG")])
def test_save_preview_writes_the_format_of_the_extension_atomically(tmp_path, name, fmt):
    img = render_preview(_plane(_photo(), focal=70.0), long_side=64)
    size, sha = save_preview(img, tmp_path / name)
    data = (tmp_path / name).read_bytes()
    assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
    with Image.open(tmp_path / name) as im:
        assert im.format == fmt and im.size == (64, 48)
        if fmt == "PNG":
            assert np.array_equal(np.asarray(im.convert("RGB")), img)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_save_preview_refuses_unknown_extensions(tmp_path):
    with pytest.raises(ValueError, match="unsupported preview extension"):
        save_preview(np.zeros((2, 2, 3), np.uint8), tmp_path / "p.gif")
    assert list(tmp_path.iterdir()) == []
