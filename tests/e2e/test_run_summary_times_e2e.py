"""The final summary's start and end time through the real CLI: printed as local clock times and
written as ``started_at``/``ended_at`` (seconds since the epoch) by ``--summary-json``, both true."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from e2e_utils import run_cli

from emulators.files import FileServer, jpeg_bytes


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def test_summary_gives_the_runs_true_start_and_end_time(tmp_path: Path) -> None:
    with FileServer() as files:
        url = files.put("/slow.jpg", jpeg_bytes(seed=52))
        files.faults.delay(2.5, path="/slow.jpg")  # the run lasts over two seconds: start and end differ
        (tmp_path / "m.csv").write_text(f"id,url\nslow,{url}\n", encoding="utf-8")
        before = time.time()
        res = run_cli(tmp_path, "run", "--source", "manifest:m.csv", "--predictor", "planar", "--store", "local:out",
                      "--planar-resolution", "24", "--run-id", "T1", "--summary-json", "s.json")
        after = time.time()
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    started, ended = summary["started_at"], summary["ended_at"]
    assert before <= started <= ended <= after, (before, started, ended, after)
    # The run's own clock agrees: its elapsed time lies between the two stamps.
    assert abs((ended - started) - summary["elapsed_s"]) < 1.0, summary
    assert summary["published"] == 1 and ended - started >= 2.0, summary
    line = next(x for x in res.stdout.splitlines() if x.startswith("run: started "))
    match = re.fullmatch(r"run: started (.+), ended (.+); folder (.+)", line)
    assert match, line
    assert match.group(1) == _clock(started) and match.group(2) == _clock(ended), (line, started, ended)
    assert match.group(3) == str((tmp_path / "runs" / "T1").resolve())
