"""The report's SVG charts and the run data behind them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from sharp_dataset_pipeline.ledger.status import PublishEvent
from sharp_dataset_pipeline.ops.gallery import plots
from sharp_dataset_pipeline.ops.gallery.runs import (
    RunData,
    bucket_width,
    gpu_series,
    items_per_minute,
    parse_gpu_log,
    parse_metrics,
    stage_timings,
    throughput,
)

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_line_chart_is_valid_svg_with_one_polyline_per_series() -> None:
    svg = plots.line_chart({"a<b": [(0, 1), (60, 3)], "c": [(0, 2), (30, 0), (60, 5)]}, name="rate",
                           title="T & U", x_label="x", y_label="y", dashed={"c"})
    root = _parse(svg)
    assert root.get("data-plot") == "rate" and root.get("data-kind") == "line"
    lines = root.findall(f"{SVG}polyline")
    assert [p.get("data-series") for p in lines] == ["a<b", "c"]
    assert lines[1].get("stroke-dasharray") == "5,3"
    assert len(lines[1].get("points").split()) == 3


def test_empty_and_degenerate_charts() -> None:
    assert _parse(plots.line_chart({}, name="n", title="t", x_label="", y_label="", empty_text="nothing")).get(
        "data-kind") == "empty"
    one = _parse(plots.line_chart({"s": [(5.0, 2.0)]}, name="n", title="t", x_label="", y_label=""))
    assert one.find(f"{SVG}circle") is not None
    assert _parse(plots.bar_chart({}, name="b", title="t", y_label="")).get("data-kind") == "empty"


def test_bar_chart_draws_one_bar_per_group_and_key() -> None:
    root = _parse(plots.bar_chart({"run1": {"fetch": 2.0, "predict": 9.0}, "run2": {"predict": 4.0}},
                                  name="stage", title="t", y_label="ms"))
    bars = [(r.get("data-group"), r.get("data-key")) for r in root.findall(f"{SVG}rect") if r.get("class") == "bar"]
    assert bars == [("run1", "fetch"), ("run1", "predict"), ("run2", "predict")]


@pytest.mark.parametrize(("lo", "hi", "first", "last"), [(0, 7, 0, 8), (0, 95, 0, 100), (3, 3, 3, 4)])
def test_nice_ticks(lo: float, hi: float, first: float, last: float) -> None:
    ticks = plots.nice_ticks(lo, hi)
    assert ticks[0] == first and ticks[-1] == last


def test_items_per_minute_per_client_with_idle_buckets() -> None:
    events = [PublishEvent(120.0, "a", 4), PublishEvent(150.0, "a", 2), PublishEvent(300.0, "b", 3)]
    series = items_per_minute(events)
    assert sorted(series) == ["a", "b"]
    a = dict(series["a"])
    assert a[150.0] == 6.0 and a[90.0] == 0.0 and a[330.0] == 0.0
    assert sum(v for _, v in series["b"]) == 3.0
    assert items_per_minute([]) == {}
    assert bucket_width(10 * 3600, max_points=60) == 600.0  # ten-minute buckets over ten hours
    week = items_per_minute([PublishEvent(0.0, "a", 10), PublishEvent(7 * 86400.0, "a", 10)], max_points=100)
    assert len(week["a"]) <= 103 and sum(v for _, v in week["a"]) * bucket_width(7 * 86400, 100) / 60 == 20


def test_metrics_and_gpu_log_parsing() -> None:
    metrics = "\n".join([
        '{"t": 10, "type": "progress", "elapsed_s": 1, "counts": {"publish": {"published": 2}, '
        '"fetch": {"ok": 4}}, "busy_s": {}}',
        "garbage",
        '{"t": 20, "type": "progress", "counts": {"publish": {"published": 5}, "fetch": {"ok": 10}, '
        '"predict": {"images": 5}}, "busy_s": {"fetch": 1.0}}',
        '{"t": 21, "type": "summary", "published": 5, "busy_s": {"fetch": 2.0, "predict": 0.5, "publish": 1.0}}',
    ])
    progress, summary = parse_metrics(metrics)
    assert len(progress) == 2 and summary is not None and summary["published"] == 5
    gpu = parse_gpu_log("timestamp,gpu_index,gpu_name,mem_used_mib,mem_total_mib,util_gpu_pct,event\n"
                        "2026-01-01T00:00:00+00:00,0,H100,1000,80000,5,start\n"
                        "2026-01-01T00:00:10+00:00,0,H100,31000,80000,99,interval\n"
                        "bad,0,H100,x,80000,0,interval\n")
    assert [s.used_mib for s in gpu] == [1000.0, 31000.0] and gpu[1].t - gpu[0].t == 10
    run = RunData("R", progress, summary, gpu)
    timings = stage_timings([run])["R"]
    assert timings == {"fetch": 200.0, "predict": 100.0, "publish": 200.0}
    assert throughput([run]) == {"R": [(10.0, 2.0), (20.0, 5.0), (21.0, 5.0)]}
    series, dashed = gpu_series([run])
    assert series["R GPU0 used"] == [(gpu[0].t, 1000.0), (gpu[1].t, 31000.0)] and dashed == {"R GPU0 total"}
