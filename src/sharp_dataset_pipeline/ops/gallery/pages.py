"""HTML of the gallery: index grid pages, one page per item, the run report. Pure: data in, HTML out.

Every value from an index row is escaped; links are only made of http(s) URLs, so a row can
never inject markup or a ``javascript:`` link. Paths are relative, so the site works from any
folder and any static server.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlsplit

from ...records import IndexRow

ASSETS = "assets"


@dataclass(frozen=True)
class GalleryItem:
    """One item as the site shows it; media paths are relative to the site root."""

    row: IndexRow
    photo: str
    preview: str
    splat: str = ""
    depth: float = 2.0


def safe_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL, else an empty string."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else ""


def _link(text: str, url: str) -> str:
    href = safe_url(url)
    return f'<a href="{escape(href)}" rel="noopener">{escape(text)}</a>' if href else escape(text)


def item_href(item_id: str) -> str:
    return f"items/{quote(item_id)}.html"


def index_name(page: int) -> str:
    return "index.html" if page == 1 else f"index-{page}.html"


def _page(title: str, body: str, depth: int, head_extra: str = "") -> str:
    up = "../" * depth
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{up}{ASSETS}/style.css">
{head_extra}</head>
<body>
<header><nav><a href="{up}index.html">Gallery</a><a href="{up}report.html">Run report</a></nav></header>
<main>
{body}
</main>
<footer class="muted">Made with sharp-dataset. Splats © their makers under the model's licence; photos © their
authors (see each item's attribution).</footer>
</body>
</html>
"""


def attribution(row: IndexRow) -> str:
    """One sentence crediting the photo: author (linked), where it comes from, licence."""
    who = row.user_name or row.user_username
    page = row.page_url or row.unsplash_url
    parts = []
    if who:
        parts.append("Photo by " + _link(who, row.user_url))
    else:
        parts.append("Photo")
    if row.source == "unsplash" or row.unsplash_url:
        parts.append("on " + _link("Unsplash", page or "https://unsplash.com"))
    elif page:
        parts.append("from " + _link(page, page))
    elif row.source_path:
        parts.append(f"from {escape(row.source)} file <code>{escape(row.source_path)}</code>")
    else:
        parts.append(f"from {escape(row.source)}")
    text = " ".join(parts) + "."
    if row.license:
        text += f" Licence: {_link(row.license, row.license) if safe_url(row.license) else escape(row.license)}."
    return text


def made_with_sharp(row: IndexRow) -> bool:
    """Whether SHARP made the item's splat (``sharp``, ``sharp-cli``); ``planar`` is a stand-in."""
    return row.predictor.startswith("sharp")


def _not_sharp_badge(row: IndexRow) -> str:
    if made_with_sharp(row):
        return ""
    name = row.predictor or "unknown predictor"
    return f' <span class="badge not-sharp" title="made by the {escape(name)} predictor">{escape(name)}: not SHARP</span>'


def index_page(items: list[GalleryItem], *, title: str, page: int, pages: int, total: int) -> str:
    """One page of the grid: each item's photo and rendered preview side by side."""
    cards = []
    for it in items:
        row = it.row
        who = row.user_name or row.user_username or row.source_path or row.source
        cards.append(
            f'<div class="card" data-item="{escape(row.id)}"><a href="{item_href(row.id)}"><div class="pair">'
            f'<img class="photo" src="{escape(it.photo)}" alt="photo {escape(row.id)}" loading="lazy">'
            f'<img class="preview" src="{escape(it.preview)}" alt="splat preview {escape(row.id)}" loading="lazy">'
            f'</div></a><div class="caption"><a href="{item_href(row.id)}">{escape(row.id)}</a> '
            f'<span class="muted">{escape(who)}</span>{_not_sharp_badge(row)}</div></div>')
    nav = []
    for p in range(1, pages + 1):
        nav.append(f"<span>{p}</span>" if p == page else f'<a href="{index_name(p)}">{p}</a>')
    pager = f'<div class="pager">Pages: {" ".join(nav)}</div>' if pages > 1 else ""
    body = (f"<h1>{escape(title)}</h1>\n<p class=\"muted\">{total} items. Left: the source photo; right: a "
            f"render of its splat.</p>\n{pager}\n<div class=\"grid\">\n" + "\n".join(cards) + f"\n</div>\n{pager}")
    return _page(title, body, 0)


def _meta_rows(row: IndexRow) -> list[tuple[str, str]]:
    pairs = [
        ("id", escape(row.id)), ("source", escape(row.source)), ("size", f"{row.width} × {row.height} px"),
        ("focal length", f"{row.focal_px:.1f} px ({escape(row.focal_source or 'unknown')})"),
        ("Gaussians", f"{row.num_gaussians:,}"), ("predictor", escape(f"{row.predictor} {row.model_version}")),
        ("description", escape(row.description or row.alt_description)), ("tags", escape(row.tags)),
        ("topics", escape(row.topics)), ("created", escape(row.created_at)),
        ("processed", escape(row.processed_at)), ("client", escape(row.client_id)),
        ("gsplat.org", _link(row.gsplat_url, row.gsplat_url) if row.gsplat_url else ""),
    ]
    return [(k, v) for k, v in pairs if v]


def item_page(it: GalleryItem, *, title: str, viewer: bool) -> str:
    """An item: attribution, photo and preview, the 3D viewer, the row's metadata."""
    row = it.row
    up = "../"
    notes = []
    if row.predictor == "planar":
        notes.append('<p class="note">Made by the planar stand-in predictor: a flat demo, not SHARP.</p>')
    if viewer and it.splat:
        # data-preview: what viewer.js shows in the canvas's place when it cannot start (no WebGL).
        view = (f'<canvas id="splat-viewer" data-src="{up}{escape(it.splat)}" data-depth="{it.depth:.4g}" '
                f'data-preview="{up}{escape(it.preview)}" data-state="none"></canvas>'
                f'<p id="viewer-status" class="muted"></p>'
                f'<p id="viewer-hint" class="muted">Drag to orbit, scroll to zoom.</p>')
        head = f'<script type="module" src="{up}{ASSETS}/viewer.js"></script>\n'
    else:
        view = '<p class="note">No 3D viewer in this build (its assets were not installed).</p>'
        head = ""
    downloads = f' <a href="{up}{escape(it.splat)}" download>Download the PLY</a>' if it.splat else ""
    table = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in _meta_rows(row))
    body = f"""<h1>{escape(row.id)}</h1>
<p class="attribution">{attribution(row)}</p>
{''.join(notes)}
<div class="item-media">
<figure><img class="photo" src="{up}{escape(it.photo)}" alt="photo {escape(row.id)}">
<figcaption class="muted">Source photo</figcaption></figure>
<figure><img class="preview" src="{up}{escape(it.preview)}" alt="splat preview {escape(row.id)}">
<figcaption class="muted">Rendered splat</figcaption></figure>
</div>
<h2>3D view</h2>
{view}
<p>{downloads}</p>
<table class="meta">{table}</table>
"""
    return _page(f"{row.id} · {title}", body, 1, head)


def report_page(*, title: str, sections: list[tuple[str, str, str]], facts: list[str]) -> str:
    """The run report: a few facts, then one ``(heading, svg, caption)`` section per plot."""
    parts = [f"<h1>Run report · {escape(title)}</h1>", "<ul>" + "".join(f"<li>{escape(f)}</li>" for f in facts)
             + "</ul>"]
    for heading, svg, caption in sections:
        parts.append(f"<section><h2>{escape(heading)}</h2>\n{svg}\n<p class=\"muted\">{escape(caption)}</p></section>")
    return _page(f"Run report · {title}", "\n".join(parts), 0)
