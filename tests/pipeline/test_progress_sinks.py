"""Progress output: heartbeat lines and the live table carry counts, rates and an ETA."""

from rich.console import Console

from sharp_dataset_pipeline.observe.sinks import _table, eta_seconds, heartbeat_line


def _snap(admitted: int, published: int, elapsed: float) -> dict:
    return {"elapsed_s": elapsed, "busy_s": {"predict": 1.0},
            "counts": {"source": {"admitted": admitted}, "fetch": {"ok": published}, "predict": {"images": published},
                       "postprocess": {"ok": published}, "publish": {"published": published},
                       "failed": {"not_an_image": 1}}}


def test_heartbeat_has_counts_rate_and_eta() -> None:
    line = heartbeat_line(_snap(admitted=21, published=10, elapsed=5.0))
    assert line.startswith("[progress]") and "publish=10" in line and "failed=1" in line
    assert "rate=2.00/s" in line and "eta=5s" in line
    assert eta_seconds(_snap(admitted=11, published=10, elapsed=5.0)) is None


def test_live_table_shows_every_stage_and_eta() -> None:
    console = Console(record=True, width=100)
    console.print(_table(_snap(admitted=21, published=10, elapsed=5.0)))
    text = console.export_text()
    for stage in ("source", "fetch", "predict", "postprocess", "publish", "failed", "ETA"):
        assert stage in text, stage
