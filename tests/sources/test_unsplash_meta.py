"""Photo JSON -> image URL, attribution fields, premium filter and focal hint."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from sharp_dataset_pipeline.records import IndexRow
from sharp_dataset_pipeline.sources import unsplash_meta as m

RAW = "https://images.unsplash.com/photo-1?ixid=M3wxMjA&ixlib=rb-4.0.3&w=400"


def test_image_url_keeps_ixid_and_sets_imgix_params() -> None:
    url = m.image_url(RAW, width=1536, quality=90, fmt="jpg")
    q = parse_qs(urlsplit(url).query)
    assert q["ixid"] == ["M3wxMjA"] and q["ixlib"] == ["rb-4.0.3"]
    assert q["w"] == ["1536"] and q["fit"] == ["max"] and q["q"] == ["90"] and q["fm"] == ["jpg"]
    assert "h" not in q
    bare = parse_qs(urlsplit(m.image_url(RAW, width=0, height=0, quality=0, fmt="")).query)
    assert bare["w"] == ["400"] and "fit" not in bare  # nothing of ours: the raw URL as it was


def test_with_utm_adds_referral_params_once() -> None:
    url = m.with_utm("https://unsplash.com/photos/x?utm_source=old", "my app")
    q = parse_qs(urlsplit(url).query)
    assert q == {"utm_source": ["my app"], "utm_medium": ["referral"]}
    assert m.with_utm("", "app") == ""


@pytest.mark.parametrize(
    ("photo", "premium"),
    [
        ({"urls": {"raw": "https://images.unsplash.com/photo-1"}}, False),
        ({"urls": {"raw": "https://plus.unsplash.com/premium_photo-1"}}, True),
        ({"premium": True, "urls": {"raw": "https://images.unsplash.com/p"}}, True),
        ({"plus": True}, True),
        ({}, False),
    ],
)
def test_is_premium(photo: dict, premium: bool) -> None:
    assert m.is_premium(photo) is premium


@pytest.mark.parametrize(
    ("make", "model", "factor"),
    [
        ("Canon", "Canon EOS 5D Mark IV", 1.0),
        ("Canon", "Canon EOS R5", 1.0),
        ("Canon", "Canon EOS R6m2", 1.0),
        ("Canon", "Canon EOS RP", 1.0),
        ("Canon", "Canon EOS R50", 1.6),
        ("Canon", "Canon EOS 80D", 1.6),
        ("Canon", "Canon EOS 7D Mark II", 1.6),
        ("Canon", "Canon EOS Rebel T7i", 1.6),
        ("Canon", "Canon EOS M50", 1.6),
        ("Canon", "Canon EOS-1D Mark IV", None),  # APS-H: not in the table, so unknown
        ("NIKON CORPORATION", "NIKON D850", 1.0),
        ("NIKON CORPORATION", "NIKON Z 6_2", 1.0),
        ("NIKON CORPORATION", "NIKON D7500", 1.5),
        ("NIKON CORPORATION", "NIKON Z 50", 1.5),
        ("NIKON CORPORATION", "NIKON D3", 1.0),
        ("SONY", "ILCE-7M3", 1.0),
        ("SONY", "ILCE-6400", 1.5),
        ("FUJIFILM", "X-T4", 1.5),
        ("FUJIFILM", "X100V", 1.5),
        ("FUJIFILM", "X30", None),
        ("FUJIFILM", "GFX100S", 0.79),
        ("OLYMPUS CORPORATION", "E-M1MarkII", 2.0),
        ("Panasonic", "DC-GH5", 2.0),
        ("Panasonic", "DC-S5", 1.0),
        ("Apple", "iPhone 13 Pro", None),
        ("samsung", "SM-G991B", None),
        (None, None, None),
    ],
)
def test_crop_factor_table(make, model, factor) -> None:
    assert m.crop_factor(make, model) == factor


@pytest.mark.parametrize(
    ("exif", "hint"),
    [
        ({"make": "NIKON CORPORATION", "model": "NIKON D7500", "focal_length": "18.0"}, 27.0),
        ({"make": "Canon", "model": "Canon EOS R5", "focal_length": 35}, 35.0),
        ({"make": "Apple", "model": "iPhone 13 Pro", "focal_length": "5.7"}, 0.0),  # phone: unknown
        ({"make": "Canon", "model": "Canon EOS R5", "focal_length": None}, 0.0),
        ({"make": "Canon", "model": "Canon EOS R5", "focal_length": "24-70"}, 0.0),
        (None, 0.0),
    ],
)
def test_focal_hint_is_converted_only_with_a_known_crop_factor(exif, hint) -> None:
    assert m.focal_hint_mm35({"exif": exif}) == hint


@pytest.mark.parametrize(("value", "mm"), [("4.2", 4.2), (50, 50.0), ("35mm", 35.0), ("", None),
                                          ("0", None), (True, None), ("nan", None), ("abc", None)])
def test_parse_focal_mm(value, mm) -> None:
    assert m.parse_focal_mm(value) == mm


PHOTO = {
    "id": "abc",
    "created_at": "2024-01-02T03:04:05Z",
    "color": "#0c2626",
    "blur_hash": "LKO2?U%2Tw=w",
    "description": None,
    "alt_description": "a lake",
    "links": {"html": "https://unsplash.com/photos/abc",
              "download_location": "https://api.unsplash.com/photos/abc/download?ixid=XYZ"},
    "user": {"name": "Ann Lee", "username": "annlee", "links": {"html": "https://unsplash.com/@annlee"}},
    "tags": [{"title": "new york"}, {"title": "black, white"}, {"title": "new york"}],
    "topic_submissions": {"nature": {"status": "approved"}, "film": {"status": "rejected"}},
}


def test_photo_meta_uses_index_row_names_and_links_back_with_utm() -> None:
    meta = m.photo_meta(PHOTO, "my_app")
    fields = set(IndexRow.field_names())
    assert set(meta) - fields == {"download_location"}
    assert meta["page_url"].endswith("utm_source=my_app&utm_medium=referral")
    assert meta["user_url"] == "https://unsplash.com/@annlee?utm_source=my_app&utm_medium=referral"
    assert meta["user_name"] == "Ann Lee" and meta["user_username"] == "annlee"
    assert meta["description"] == "" and meta["alt_description"] == "a lake"
    assert meta["tags"] == "new york, black white"  # whole titles, deduplicated, no inner commas
    assert meta["topics"] == "nature"
    assert meta["license"] == "Unsplash License"
    assert meta["download_location"] == "https://api.unsplash.com/photos/abc/download?ixid=XYZ"
    full = {**PHOTO, "topics": [{"title": "Nature"}, {"title": "Travel"}]}
    assert m.photo_meta(full, "x")["topics"] == "Nature, Travel"
