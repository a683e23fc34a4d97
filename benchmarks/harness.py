"""Tiny timing harness shared by the benchmarks.

Each benchmark measures its candidate and its baseline in the same run, on the same machine and
data, and prints min / median / max and the ratio of medians. Run a benchmark as
``python benchmarks/bench_x.py [--quick]``; it imports this module as ``from harness import ...``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of each measured call (the warm-up call is not included)."""

    name: str
    seconds: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    def line(self) -> str:
        return (
            f"{self.name}: median {self.median:.4f} s  (min {self.min:.4f}, max {self.max:.4f}, "
            f"n={len(self.seconds)})"
        )


def time_call(name: str, fn: Callable[[], object], repeat: int, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeat`` times timed with ``time.perf_counter``."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    timing = Timing(name, tuple(seconds))
    print(timing.line(), flush=True)
    return timing


def ratio_line(candidate: Timing, baseline: Timing) -> str:
    """``"<candidate> vs <baseline>: X.Xx faster"`` (or slower), from the medians of one run."""
    if candidate.median <= 0:
        return f"{candidate.name} vs {baseline.name}: too fast to compare"
    ratio = baseline.median / candidate.median
    if ratio >= 1:
        return f"{candidate.name} vs {baseline.name}: {ratio:.1f}x faster"
    return f"{candidate.name} vs {baseline.name}: {1 / ratio:.1f}x slower"


def compare(candidate: Timing, baseline: Timing) -> float:
    """Print the ratio line and return baseline median / candidate median."""
    print(ratio_line(candidate, baseline), flush=True)
    return baseline.median / candidate.median if candidate.median > 0 else float("inf")


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """Common flags: ``--quick`` (fewer repetitions) and ``--repeat N`` (override)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="timed repetitions per measurement")
    return parser.parse_args(argv)


def repeats(args: argparse.Namespace, full: int, quick: int = 1) -> int:
    """The repetition count the flags ask for."""
    if args.repeat is not None:
        return max(1, args.repeat)
    return quick if args.quick else full


def machine_line() -> str:
    """One line saying where the numbers were measured."""
    py = platform.python_version()
    return f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, python {py}"
