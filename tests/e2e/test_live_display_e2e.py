"""The live display in a real terminal: the CLI runs under a pseudo-terminal 80 columns wide, its
output is replayed by a terminal emulator (pyte), and the test reads the screen a person would see.

Log lines must stay above the live table (not be drawn over), a Ctrl+C must show at once that it
was received and what the run waits for, and only one table may be left on the screen.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_utils import cli_cmd, cli_env, make_photos

pyte = pytest.importorskip("pyte", reason="pyte (a test dependency) replays the terminal output")

COLS, ROWS = 80, 200


class Terminal:
    """The CLI on a pseudo-terminal of COLS x ROWS; ``text()`` is the screen with wrapped lines joined."""

    def __init__(self, cwd: Path, args: list[str], **env: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        full_env = cli_env(**{"PROGRESS": "auto", "TERM": "xterm-256color", "COLUMNS": str(COLS), "LINES": str(ROWS),
                              **env})
        self.proc = subprocess.Popen(args, cwd=cwd, env=full_env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the child closed the terminal
                return
            self.stream.feed(data)

    def wait_for(self, cond: Callable[[str], bool], timeout: float) -> float:
        """Seconds until ``cond(text)`` held; fails after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            self.pump(0.05)
            if cond(self.text()):
                return time.monotonic() - start
        raise AssertionError(f"not seen within {timeout}s; screen:\n{self.text()}")

    def finish(self, timeout: float) -> int:
        end = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < end:
            self.pump(0.05)
        for _ in range(20):  # what is still buffered
            self.pump(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
        os.close(self.master)
        return self.proc.wait()

    def text(self) -> str:
        out = []
        for y in range(ROWS):
            line = self.screen.buffer[y]  # not ``display``: that measures every character's width (slow)
            stripped = "".join(line[x].data for x in range(COLS)).rstrip()
            out.append(stripped if len(stripped) == COLS else stripped + "\n")
        return "".join(out).rstrip() + "\n"


def test_ctrl_c_shows_at_once_and_log_lines_stay_above_one_table(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 300, size=(160, 120))
    (photos / "aaa_broken.jpg").write_bytes(b"not a jpeg at all")
    (photos / "aab_empty.jpg").write_bytes(b"")
    term = Terminal(tmp_path, cli_cmd("run", "--source", f"folder:{photos}", "--predictor", "planar",
                                      "--store", f"local:{tmp_path / 'out'}", "--planar-resolution", "200",
                                      "--run-id", "tty"),
                    DOWNLOAD_WORKERS="1", STOP_DRAIN_SECS="60")
    # Work is under way (the table has been redrawn for a while) and the broken files were reported.
    term.wait_for(lambda t: "sharp-dataset  2s" in t and t.count("failed at fetch") == 2, timeout=120)
    term.proc.send_signal(signal.SIGINT)
    seen_after = term.wait_for(lambda t: "stopping: SIGINT; draining work in flight" in t
                               and "stopping (SIGINT): taking no new work" in t, timeout=10)
    assert seen_after < 3.0  # "at once": the next refresh shows it (refreshes are 0.25 s apart; slack for load)
    # What it waits for: the items still in flight, counted. On a loaded machine the stop can land while
    # nothing is between stages (0); either way the count is what the drain publishes at most.
    at_stop = term.text()
    waiting = re.search(r"\((\d+)\s+in\s+flight\)", at_stop)
    shown = re.search(r"│ publish\s+│\s+(\d+) │", at_stop)
    assert waiting and shown, at_stop
    code = term.finish(timeout=120)
    text = term.text()
    final = re.search(r"published (\d+), failed", text)
    assert final, text
    assert int(shown.group(1)) <= int(final.group(1)) <= int(shown.group(1)) + int(waiting.group(1)), (at_stop, text)
    assert code == 0, text
    # The log lines are intact on the screen, each once: nothing was drawn over them.
    assert "failed at fetch: not_an_image" in text and "failed at fetch: empty_file" in text, text
    assert text.count("stopping: SIGINT; draining work in flight") == 1, text
    # One table is left (the final one), no half-drawn copies above it.
    assert text.count("sharp-dataset  ") == 1, text
    assert text.count("┃ stage ") == 1, text
    # "x of N": the folder knows its size (302 files).
    assert " of 302" in text, text
    # Failure reasons are on their own line, not in the rate column.
    assert "failed: empty_file: 1, not_an_image: 1" in text, text
    # The final summary names the predictor, the times and the absolute run folder.
    assert "predictor: planar (planar-1 (not SHARP))" in text, text
    assert f"folder {tmp_path / 'runs' / 'tty'}" in text, text
    assert "stopped: SIGINT" in text, text
    # Once drained nothing is in flight: the items the stop dropped from the queues are not counted.
    assert re.search(r"\(0\s+in\s+flight\)", text), text


def test_heartbeat_lines_keep_their_progress_prefix_and_show_x_of_n(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 120, size=(160, 120))
    done = subprocess.run(cli_cmd("run", "--source", f"folder:{photos}", "--predictor", "planar",
                                  "--store", f"local:{tmp_path / 'out'}", "--planar-resolution", "200"),
                          cwd=tmp_path, env=cli_env(HEARTBEAT_SECS="0.5", DOWNLOAD_WORKERS="1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    beats = [line for line in done.stderr.splitlines() if "fetch=" in line and "rate=" in line]
    assert beats, done.stderr
    assert all(line.startswith("[progress] fetch=") for line in beats), beats
    assert all(" done=" in line and line.split(" done=")[1].split()[0].endswith("/120") for line in beats), beats


def test_an_unsplash_feed_reports_x_of_its_x_total(tmp_path: Path) -> None:
    from emulators.unsplash import UnsplashEmulator

    key = "test-access-key-0123"
    with UnsplashEmulator(n_photos=95, access_key=key, leading_dash_ids=False) as emu:
        done = subprocess.run(
            cli_cmd("run", "--source", "unsplash-list", "--predictor", "planar", "--store",
                    f"local:{tmp_path / 'out'}", "--range-size", "30"),
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env=cli_env(HEARTBEAT_SECS="0.3", UNSPLASH_ACCESS_KEY=key, UNSPLASH_API_BASE=emu.base_url,
                        UNSPLASH_DETAILS="never", UNSPLASH_APP_NAME="e2e_app", PLANAR_RESOLUTION="160",
                        PER_PAGE="10", DOWNLOAD_WORKERS="1"))
    assert done.returncode == 0, done.stderr
    beats = [line for line in done.stderr.splitlines() if line.startswith("[progress] ") and " done=" in line]
    assert beats and all(line.split(" done=")[1].split()[0].endswith("/95") for line in beats), done.stderr


def test_a_manifest_gives_its_total_and_the_bar_fills(tmp_path: Path) -> None:
    photos = make_photos(tmp_path / "photos", 40, size=(96, 64))
    manifest = tmp_path / "list.csv"
    manifest.write_text("id,url\n" + "".join(f"p{i},{p.as_uri()}\n" for i, p in enumerate(photos)), encoding="utf-8")
    term = Terminal(tmp_path, cli_cmd("run", "--source", f"manifest:{manifest}", "--predictor", "planar",
                                      "--store", f"local:{tmp_path / 'out'}", "--planar-resolution", "48"),
                    DOWNLOAD_WORKERS="1")
    # "x of N" with N the manifest's rows, shown while the run works.
    term.wait_for(lambda t: re.search(r"^\d+ of 40 ━", t, re.MULTILINE) is not None, timeout=120)
    code = term.finish(timeout=180)
    text = term.text()
    assert code == 0, text
    rows = [y for y in range(ROWS)
            if "".join(term.screen.buffer[y][x].data for x in range(COLS)).startswith("40 of 40 ")]
    assert len(rows) == 1, text
    line = term.screen.buffer[rows[0]]
    start = len("40 of 40 ")
    bar = [line[x] for x in range(start, start + 30)]
    # The bar is drawn 30 cells wide, and full: every cell the same (finished) colour.
    assert "".join(c.data for c in bar) == "━" * 30, text
    assert len({c.fg for c in bar}) == 1 and bar[0].fg != "default", [c.fg for c in bar]
