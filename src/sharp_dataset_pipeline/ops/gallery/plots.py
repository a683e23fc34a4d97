"""Small SVG charts for the run report. Pure: data in, SVG text out (no plotting library).

Two kinds are enough for the report: a line chart of one or more series over a shared x axis
(time in UTC, or plain numbers) and a grouped bar chart. Every chart is a standalone ``<svg>``
element with ``data-plot`` naming it, so pages and tests can find it.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
_MARGIN = (64, 24, 40, 56)  # left, right, top, bottom


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    # The last tick is the first one at or above ``hi``, so the axis covers every value.
    n = max(1, math.ceil((hi - start) / step - 1e-9))
    return [round(start + i * step, 10) for i in range(n + 1)]


def _time_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    span = max(hi - lo, 1.0)
    steps = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)
    step = next((s for s in steps if span / s <= count), steps[-1])
    first = math.ceil(lo / step) * step
    return [float(first + i * step) for i in range(int((hi - first) // step) + 1)]


def _fmt_time(t: float, span: float) -> str:
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    if span >= 2 * 86400:
        return dt.strftime("%m-%d %H:%M")
    return dt.strftime("%H:%M:%S" if span < 600 else "%H:%M")


def _fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _frame(kind: str, name: str, title: str, width: int, height: int) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" data-plot="{escape(name)}" '
            f'data-kind="{kind}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(title)}" font-family="sans-serif" font-size="12">',
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
            f'{escape(title)}</text>']


def _empty(name: str, title: str, width: int, height: int, why: str) -> str:
    parts = _frame("empty", name, title, width, height)
    parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" fill="#777">'
                 f'{escape(why)}</text></svg>')
    return "\n".join(parts)


def _legend(names: list[str], x: float, y: float, dashed: set[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        yy = y + 16 * i
        dash = ' stroke-dasharray="5,3"' if name in dashed else ""
        out.append(f'<line x1="{x:.1f}" y1="{yy:.1f}" x2="{x + 18:.1f}" y2="{yy:.1f}" stroke="{colour}" '
                   f'stroke-width="2.5"{dash}/><text x="{x + 24:.1f}" y="{yy + 4:.1f}">{escape(name)}</text>')
    return out


def line_chart(series: dict[str, list[tuple[float, float]]], *, name: str, title: str, x_label: str,
               y_label: str, time_axis: bool = True, dashed: set[str] | None = None, width: int = 900,
               height: int = 320, empty_text: str = "no data") -> str:
    """Lines of ``(x, y)`` points, one per series (x = UNIX time in UTC when ``time_axis``)."""
    dashed = dashed or set()
    points = [(x, y) for pts in series.values() for x, y in pts if math.isfinite(x) and math.isfinite(y)]
    if not points:
        return _empty(name, title, width, height, empty_text)
    left, right, top, bottom = _MARGIN
    legend_w = 16 + 7 * max(len(n) for n in series) if len(series) > 1 else 0
    pw, ph = width - left - right - legend_w, height - top - bottom
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    if x1 <= x0:
        x0, x1 = x0 - 1, x1 + 1
    yt = nice_ticks(min(0.0, min(p[1] for p in points)), max(p[1] for p in points))
    y0, y1 = yt[0], yt[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    parts = _frame("line", name, title, width, height)
    for t in yt:
        parts.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt_num(t)}</text>')
    xt = _time_ticks(x0, x1) if time_axis else nice_ticks(x0, x1)
    for t in (v for v in xt if x0 <= v <= x1):
        label = _fmt_time(t, x1 - x0) if time_axis else _fmt_num(t)
        parts.append(f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="#333"/>'
                     f'<text x="{sx(t):.1f}" y="{top + ph + 18}" text-anchor="middle">{escape(label)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    for i, (label, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        good = sorted((x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y))
        if not good:
            continue
        dash = ' stroke-dasharray="5,3"' if label in dashed else ""
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        parts.append(f'<polyline class="series" data-series="{escape(label)}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"{dash} points="{coords}"/>')
        if len(good) == 1:
            parts.append(f'<circle cx="{sx(good[0][0]):.1f}" cy="{sy(good[0][1]):.1f}" r="3" fill="{colour}"/>')
    if len(series) > 1:
        parts += _legend(list(series), left + pw + 12, top + 8, dashed)
    parts.append(f'<text x="{left + pw / 2:.0f}" y="{height - 12}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(16,{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle">'
                 f'{escape(y_label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def bar_chart(groups: dict[str, dict[str, float]], *, name: str, title: str, y_label: str, width: int = 900,
              height: int = 320, empty_text: str = "no data") -> str:
    """Grouped bars: one group per key of ``groups``, one bar per inner key (same colour per key)."""
    keys: list[str] = []
    for values in groups.values():
        keys += [k for k in values if k not in keys]
    values_all = [v for values in groups.values() for v in values.values() if math.isfinite(v)]
    if not values_all:
        return _empty(name, title, width, height, empty_text)
    left, right, top, bottom = _MARGIN
    legend_w = 16 + 7 * max(len(k) for k in keys)
    pw, ph = width - left - right - legend_w, height - top - bottom
    yt = nice_ticks(0.0, max(values_all))
    y1 = yt[-1] or 1.0

    def sy(y: float) -> float:
        return top + ph - y / y1 * ph

    parts = _frame("bar", name, title, width, height)
    for t in yt:
        parts.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt_num(t)}</text>')
    group_w = pw / len(groups)
    bar_w = group_w * 0.8 / max(1, len(keys))
    for g, (group, values) in enumerate(groups.items()):
        gx = left + g * group_w + group_w * 0.1
        for k, key in enumerate(keys):
            v = values.get(key)
            if v is None or not math.isfinite(v):
                continue
            x = gx + k * bar_w
            tip = escape(f"{group} {key}: {v:.4g}")
            parts.append(f'<rect class="bar" data-group="{escape(group)}" data-key="{escape(key)}" x="{x:.1f}" '
                         f'y="{sy(v):.1f}" width="{bar_w * 0.9:.1f}" height="{top + ph - sy(v):.1f}" '
                         f'fill="{PALETTE[k % len(PALETTE)]}"><title>{tip}</title></rect>')
        parts.append(f'<text x="{gx + group_w * 0.4:.1f}" y="{top + ph + 18}" text-anchor="middle">'
                     f'{escape(group[:28])}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    for k, key in enumerate(keys):
        colour = PALETTE[k % len(PALETTE)]
        y = top + 8 + 16 * k
        parts.append(f'<rect x="{left + pw + 12}" y="{y - 6}" width="14" height="10" fill="{colour}"/>'
                     f'<text x="{left + pw + 32}" y="{y + 4}">{escape(key)}</text>')
    parts.append(f'<text transform="translate(16,{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle">'
                 f'{escape(y_label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
