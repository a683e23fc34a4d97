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


def _render(snap: dict) -> list[str]:
    console = Console(record=True, width=100)
    console.print(_table(snap))
    return [" ".join(line.replace("│", " ").split()) for line in console.export_text().splitlines()]


def test_live_table_shows_every_stage_and_eta() -> None:
    lines = _render(_snap(admitted=21, published=10, elapsed=5.0))
    # 21 admitted, 10 published + 1 failed in 5 s: 10 to go at 2 items/s.
    assert "ETA for admitted items: 5s" in lines, lines
    assert "source 21 4.20/s" in lines, lines
    for stage in ("fetch", "predict", "postprocess", "publish"):
        assert any(line.startswith(f"{stage} 10 2.00/s") for line in lines), (stage, lines)
    # The failed row has a rate like every other row; the reasons get a line of their own.
    assert "failed 1 0.20/s" in lines, lines
    assert "failed: not_an_image: 1" in lines, lines
    # Without anything left to wait for there is no ETA value, only the placeholder.
    done = _render(_snap(admitted=11, published=10, elapsed=5.0))
    assert "ETA: -" in done and not any("ETA for" in line for line in done), done
