"""Pure mapping of Unsplash photo JSON onto what the pipeline needs.

- ``image_url``: ``urls.raw`` plus imgix parameters (``w``/``h`` with ``fit=max``, ``q``, ``fm``);
  ``ixid``/``ixlib`` already on the raw URL are kept.
- ``photo_meta``: attribution and description fields under IndexRow names, links carrying
  ``utm_source=<app>&utm_medium=referral`` as the API guidelines require, plus the photo's
  ``download_location`` (query string kept) for download tracking.
- ``focal_hint_mm35``: the API's ``exif.focal_length`` is a *physical* focal length. It becomes a
  35 mm equivalent only when the camera's crop factor is known from a small table of common
  bodies; phones and unknown cameras give 0 (unknown), never a guess.
- ``is_premium``: Unsplash+ photos (``plus.unsplash.com`` or a premium/plus flag), whose licence
  forbids machine-learning use, are skipped by the source.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

LICENSE = "Unsplash License"
PREMIUM_HOSTS = frozenset({"plus.unsplash.com"})

# (pattern over "MAKE MODEL" upper-cased, crop factor). First match wins, so full-frame
# bodies come before the broader crop-sensor patterns of the same maker.
_CROP_FACTORS: tuple[tuple[re.Pattern[str], float], ...] = tuple(
    (re.compile(p), f)
    for p, f in (
        (r"\bEOS[- ]?(?:5D|6D)", 1.0),
        (r"\bEOS[- ]?1D[- ]?X|\bEOS[- ]?1DS", 1.0),
        (r"\bEOS[- ]?R(?:P|1|3|5|6|8)?(?:M2)?(?![0-9A-Z])", 1.0),
        (r"\bEOS[- ]?(?:7D|\d{2,4}D|REBEL|KISS|M\d*(?![0-9A-Z])|R(?:7|10|50|100)(?![0-9]))", 1.6),
        (r"\bNIKON (?:D[3-6][SX]?|D6[01]0|D7[058]0|D8[0-9]0E?|DF|Z ?[5-9](?:_?2|_?II)?|Z ?F)$", 1.0),
        (r"\bNIKON (?:D[3-7]\d{3}|D[1-5]00S?|D[4-9]0X?|Z ?(?:50|30|FC))$", 1.5),
        (r"\bILCE-(?:7[A-Z0-9]*|9[A-Z0-9]*|1)$|\bZV-E1$", 1.0),
        (r"\b(?:ILCE-[3-6]\d{3}[A-Z]*|NEX-[A-Z0-9]+|ZV-E10[A-Z0-9]*)$", 1.5),
        (r"\bGFX ?\d+", 0.79),
        (r"\bFUJIFILM\b.*\bX(?:-(?:T|PRO|E|S|H|A|M)\d*|100[A-Z]*|F10)\b", 1.5),
        (r"\b(?:OLYMPUS|OM DIGITAL)\b.*\b(?:E-M\d|E-P[LM]?\d|PEN-F|OM-\d)", 2.0),
        (r"\bPANASONIC\b.*\bDC-S\d", 1.0),
        (r"\bPANASONIC\b.*\bD[CM]{1,2}-G", 2.0),
        (r"\bLEICA (?:M\d*|SL\d*|Q\d*)\b", 1.0),
    )
)


def image_url(raw: str, *, width: int = 1536, height: int = 0, quality: int = 90, fmt: str = "jpg") -> str:
    """``raw`` with imgix sizing: long side bounded by ``width``/``height`` (``fit=max`` never
    upscales), JPEG quality ``quality``, format ``fmt``. 0 leaves a dimension unset."""
    parts = urlsplit(raw)
    ours: dict[str, str] = {}
    if width > 0:
        ours["w"] = str(width)
    if height > 0:
        ours["h"] = str(height)
    if ours:
        ours["fit"] = "max"
    if quality > 0:
        ours["q"] = str(quality)
    if fmt:
        ours["fm"] = fmt
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    return urlunsplit(parts._replace(query=urlencode(kept + list(ours.items()))))


def with_utm(url: str, app_name: str) -> str:
    """``url`` with ``utm_source=<app_name>&utm_medium=referral`` (existing utm values replaced)."""
    if not url:
        return ""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("utm_source", "utm_medium")]
    kept += [("utm_source", app_name or "sharp_dataset"), ("utm_medium", "referral")]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def is_premium(photo: dict[str, Any]) -> bool:
    """Unsplash+ (premium) photos: their licence bans ML use, so they are never processed."""
    if photo.get("premium") or photo.get("plus"):
        return True
    urls = photo.get("urls") or {}
    for url in (urls.get("raw"), urls.get("full"), urls.get("regular")):
        if url and urlsplit(str(url)).netloc.lower() in PREMIUM_HOSTS:
            return True
    return False


def photo_meta(photo: dict[str, Any], app_name: str) -> dict[str, Any]:
    """IndexRow-named attribution fields of a photo, plus ``download_location``."""
    links = photo.get("links") or {}
    user = photo.get("user") or {}
    user_links = user.get("links") or {}
    page = with_utm(str(links.get("html") or ""), app_name)
    return {
        "page_url": page,
        "unsplash_url": page,
        "user_name": _text(user.get("name")),
        "user_username": _text(user.get("username")),
        "user_url": with_utm(str(user_links.get("html") or ""), app_name),
        "description": _text(photo.get("description")),
        "alt_description": _text(photo.get("alt_description")),
        "tags": ", ".join(tag_titles(photo)),
        "topics": ", ".join(topic_titles(photo)),
        "created_at": _text(photo.get("created_at")),
        "color": _text(photo.get("color")),
        "blur_hash": _text(photo.get("blur_hash")),
        "license": LICENSE,
        "download_location": _text(links.get("download_location")),
    }


def tag_titles(photo: dict[str, Any]) -> list[str]:
    """Whole tag titles (``tags``, else ``tags_preview``), commas removed so the joined form parses."""
    tags = photo.get("tags") or photo.get("tags_preview") or []
    return _titles(tags)


def topic_titles(photo: dict[str, Any]) -> list[str]:
    """Topic titles (``topics``), else the slugs of approved ``topic_submissions``."""
    topics = photo.get("topics")
    if topics:
        return _titles(topics)
    subs = photo.get("topic_submissions") or {}
    if not isinstance(subs, dict):
        return []
    return sorted(slug for slug, info in subs.items()
                  if isinstance(info, dict) and info.get("status") == "approved")


def has_details(photo: dict[str, Any]) -> bool:
    """Whether this JSON is a full photo (``GET /photos/:id``), which alone carries ``exif``."""
    return isinstance(photo.get("exif"), dict)


def parse_focal_mm(value: Any) -> float | None:
    """A physical focal length in mm from the API's ``exif.focal_length`` (``"4.2"``, ``50``,
    ``"35mm"``); None for missing, ranges or nonsense."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().lower().removesuffix("mm").strip()
    try:
        focal = float(text)
    except ValueError:
        return None
    if not math.isfinite(focal) or not 1.0 <= focal <= 2000.0:
        return None
    return focal


def crop_factor(make: Any, model: Any) -> float | None:
    """The crop factor of a camera body we know, else None (phones and unknown bodies)."""
    text = f"{make or ''} {model or ''}".upper().strip()
    if not text:
        return None
    for pattern, factor in _CROP_FACTORS:
        if pattern.search(text):
            return factor
    return None


def focal_hint_mm35(photo: dict[str, Any]) -> float:
    """35 mm-equivalent focal length from ``exif`` when the crop factor is known, else 0."""
    exif = photo.get("exif")
    if not isinstance(exif, dict):
        return 0.0
    focal = parse_focal_mm(exif.get("focal_length"))
    factor = crop_factor(exif.get("make"), exif.get("model"))
    if focal is None or factor is None:
        return 0.0
    return round(focal * factor, 1)


def _titles(entries: Any) -> list[str]:
    out: list[str] = []
    if not isinstance(entries, list):
        return out
    for entry in entries:
        title = entry.get("title") if isinstance(entry, dict) else entry
        if isinstance(title, str):
            clean = " ".join(title.replace(",", " ").split())
            if clean and clean not in out:
                out.append(clean)
    return out


def _text(value: Any) -> str:
    return "" if value is None else str(value)
