"""fetch_item(): local paths are linked, URLs downloaded; the extension follows the real format."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from PIL import Image

from emulators.files import FileServer, encode, jpeg_bytes, smooth_rgb
from sharp_dataset_pipeline.errors import PermanentError, TransientError
from sharp_dataset_pipeline.fetch.fetcher import fetch_item
from sharp_dataset_pipeline.net import make_client
from sharp_dataset_pipeline.records import Item

LIMITS = {"max_pixels": 10_000_000, "max_bytes": 5_000_000, "attempts": 3, "retry_base_s": 0.0}


def _item(item_id: str, **kwargs) -> Item:
    return Item(id=item_id, source="test", unit="test/000000-000009", offset=0, **kwargs)


def test_local_path_is_copied_under_its_real_extension(tmp_path: Path) -> None:
    data = encode(Image.fromarray(smooth_rgb(80, 50)), "PNG")
    src = tmp_path / "photos" / "holiday.jpg"  # a PNG with a misleading name
    src.parent.mkdir()
    src.write_bytes(data)
    images = tmp_path / "images"
    got = fetch_item(_item("abc123", path=str(src)), images, None, **LIMITS)
    assert got.original_path == images / "abc123.png" and got.ext == "png"
    assert got.original_path.read_bytes() == data
    # A private copy, not a link: editing the user's photo later cannot change what was published.
    assert not os.path.samefile(got.original_path, src)
    src.write_bytes(b"edited in place")
    assert got.original_path.read_bytes() == data
    assert (got.size, got.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (got.width, got.height) == (80, 50) and got.rgb.shape == (50, 80, 3)
    assert got.focal_source == "default" and got.focal_px > 0


def test_local_path_refetch_replaces_cleanly(tmp_path: Path) -> None:
    src = tmp_path / "a.jpg"
    src.write_bytes(jpeg_bytes())
    images = tmp_path / "images"
    fetch_item(_item("id1", path=str(src)), images, None, **LIMITS)
    fetch_item(_item("id1", path=str(src)), images, None, **LIMITS)
    assert sorted(p.name for p in images.iterdir()) == ["id1.jpg"]


def test_focal_hint_reaches_the_decoder(tmp_path: Path) -> None:
    src = tmp_path / "a.jpg"
    src.write_bytes(jpeg_bytes())
    got = fetch_item(_item("h", path=str(src), focal_hint_mm35=50.0), tmp_path / "i", None, **LIMITS)
    assert got.focal_source == "hint"


@pytest.mark.parametrize(
    ("setup", "reason"),
    [("missing", "missing_file"), ("too_big", "too_large"), ("text", "not_an_image"), ("none", "no_location")],
)
def test_local_failures_are_permanent_and_leave_nothing(tmp_path: Path, setup: str, reason: str) -> None:
    src = tmp_path / "in.jpg"
    if setup == "too_big":
        src.write_bytes(jpeg_bytes(400, 300))
    elif setup == "text":
        src.write_text("hello")
    item = _item("bad", path=str(src)) if setup != "none" else _item("bad")
    images = tmp_path / "images"
    limits = dict(LIMITS, max_bytes=100) if setup == "too_big" else LIMITS
    with pytest.raises(PermanentError) as info:
        fetch_item(item, images, None, **limits)
    assert info.value.reason == reason
    assert not images.exists() or list(images.iterdir()) == []


def test_url_is_downloaded_retried_and_named_by_format(file_server: FileServer, tmp_path: Path) -> None:
    data = encode(Image.fromarray(smooth_rgb(64, 48)), "WEBP")
    url = file_server.put("/img/photo.jpg?w=1080", data)  # the URL lies about the format too
    file_server.faults.status(503)
    images = tmp_path / "images"
    with make_client(timeout_s=5) as client:
        got = fetch_item(_item("u1", url=url), images, client, **LIMITS)
    assert got.ext == "webp" and got.original_path == images / "u1.webp"
    assert got.original_path.read_bytes() == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in images.iterdir()) == ["u1.webp"]


def test_url_that_is_not_an_image_leaves_nothing(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.put("/page.jpg", b"<html>captcha</html>")
    images = tmp_path / "images"
    with make_client(timeout_s=5) as client, pytest.raises(PermanentError) as info:
        fetch_item(_item("u2", url=url), images, client, **LIMITS)
    assert info.value.reason == "not_an_image"
    assert list(images.iterdir()) == []


def test_url_transient_failure_surfaces_after_attempts(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.put("/p.jpg", jpeg_bytes())
    file_server.faults.status(500, times=5)
    with make_client(timeout_s=5) as client, pytest.raises(TransientError):
        fetch_item(_item("u3", url=url), tmp_path / "images", client, **dict(LIMITS, attempts=2))
    assert file_server.hits("/p.jpg") == 2


def test_item_source_is_the_folder_path_or_the_url_without_credentials() -> None:
    from sharp_dataset_pipeline.fetch.fetcher import item_source
    from sharp_dataset_pipeline.records import Item

    folder_item = Item(id="a", source="folder", unit="u", offset=0, path="/abs/photos/sub/a.jpg",
                       meta={"source_path": "sub/a.jpg"})
    assert item_source(folder_item) == "sub/a.jpg"
    url = ("https://u:pw@cdn.example/p/a.jpg?w=400&client_id=K1&token=T1&sig=S1&X-Amz-Signature=S2"
           "&X-Amz-Credential=C1&ixid=abc")
    url_item = Item(id="b", source="manifest", unit="u", offset=1, url=url)
    assert item_source(url_item) == "https://cdn.example/p/a.jpg?w=400&ixid=abc"
