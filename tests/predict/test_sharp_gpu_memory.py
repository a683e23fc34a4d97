"""``gpu_mem_log.csv``: rows per GPU from NVML, and one warning (no file) where there is no NVIDIA GPU.

NVML itself is outside this project; a small object with pynvml's function names stands in for it
where a real GPU is not present.
"""

from __future__ import annotations

import csv
import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from sharp_dataset_pipeline.predict.gpu_memory import COLUMNS, GpuMemoryLogger

MIB = 1024 * 1024


class FakeNvml:
    """pynvml's calls used by the logger, over two fake GPUs."""

    class NVMLError(Exception):
        pass

    def __init__(self, fail_init: bool = False) -> None:
        self.fail_init = fail_init
        self.used = [1000 * MIB, 2000 * MIB]
        self.calls: list[str] = []
        self.samples = 0
        self.sampled = threading.Event()

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.calls.append("init")
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:  # noqa: N802
        return f"Fake GPU {h}".encode()

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:  # noqa: N802
        self.samples += 1
        if self.samples >= 8:
            self.sampled.set()
        return SimpleNamespace(used=self.used[h], total=80 * 1024 * MIB, free=0)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:  # noqa: N802
        return SimpleNamespace(gpu=10 * (h + 1), memory=0)


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_rows_per_gpu_with_events(tmp_path: Path) -> None:
    nvml = FakeNvml()
    path = tmp_path / "run" / "gpu_mem_log.csv"
    gpu_log = GpuMemoryLogger(path, interval_s=3600, nvml=nvml, clock=lambda: 1_700_000_000.0)
    assert gpu_log.start()
    nvml.used[1] = 3000 * MIB
    assert gpu_log.sample("after_predict") == 2
    gpu_log.stop()
    assert nvml.calls == ["init", "shutdown"]
    with open(path, encoding="utf-8") as f:
        assert f.readline().strip() == ",".join(COLUMNS)
    got = rows(path)
    assert [(r["gpu_index"], r["event"]) for r in got] == [
        ("0", "start"), ("1", "start"), ("0", "after_predict"), ("1", "after_predict"), ("0", "stop"), ("1", "stop")]
    assert got[1]["mem_used_mib"] == "2000" and got[3]["mem_used_mib"] == "3000"
    assert got[0]["mem_total_mib"] == "81920" and got[1]["util_gpu_pct"] == "20"
    assert got[0]["gpu_name"] == "Fake GPU 0" and got[0]["timestamp"] == "2023-11-14T22:13:20+00:00"


def test_interval_thread_keeps_sampling(tmp_path: Path) -> None:
    nvml = FakeNvml()
    path = tmp_path / "gpu_mem_log.csv"
    with GpuMemoryLogger(path, interval_s=0.01, nvml=nvml):
        assert nvml.sampled.wait(timeout=60), "the sampling thread never ran"
    events = [r["event"] for r in rows(path)]
    assert events[:2] == ["start", "start"] and events[-2:] == ["stop", "stop"]
    assert "interval" in events


def test_no_gpu_is_one_warning_and_no_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "gpu_mem_log.csv"
    gpu_log = GpuMemoryLogger(path, nvml=FakeNvml(fail_init=True))
    with caplog.at_level(logging.WARNING):
        assert not gpu_log.start()
        assert gpu_log.sample() == 0
        gpu_log.stop()
    assert not path.exists()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Driver Not Loaded" in warnings[0].getMessage()


def nvidia_devices(dev: Path = Path("/dev")) -> list[Path]:
    """The NVIDIA GPUs this machine exposes, seen by the kernel's device nodes, not by NVML."""
    return sorted(p for p in dev.glob("nvidia[0-9]*") if p.name[len("nvidia"):].isdigit())


def test_real_nvml_on_this_machine(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the real pynvml, the branch this machine must take: one row per GPU where the kernel exposes
    NVIDIA devices, else the single warning and no file. (NVML failing on a GPU machine fails the test.)"""
    import pynvml  # a pinned dependency: never skipped

    assert pynvml.nvmlInit  # the real module, not a stand-in
    gpus = nvidia_devices()
    path = tmp_path / "gpu_mem_log.csv"
    gpu_log = GpuMemoryLogger(path, interval_s=3600)
    with caplog.at_level(logging.WARNING):
        started = gpu_log.start()
    gpu_log.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if gpus:
        assert started, f"{len(gpus)} NVIDIA device(s) here but NVML could not be read: {warnings}"
        start_rows = [r for r in rows(path) if r["event"] == "start"]
        assert len(start_rows) == len(gpus), start_rows
        assert sorted(int(r["gpu_index"]) for r in start_rows) == list(range(len(gpus)))
        assert all(int(r["mem_total_mib"]) > 0 for r in start_rows)
    else:
        assert not started and not path.exists()
        assert len(warnings) == 1 and "no NVIDIA GPU" in warnings[0], warnings
