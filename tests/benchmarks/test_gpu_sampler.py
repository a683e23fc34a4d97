"""benchmarks/gpu_sampler.py against a scripted NVML binding (CI has no GPU; NVML is the driver's
interface, so a fake binding stands in for the driver, not for our code).

The binding serves a fixed sequence of utilisation and memory readings, then raises NVMLError
(which the sampler skips), so the figures are exact whatever the thread's timing.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_sampler.py"
_spec = importlib.util.spec_from_file_location("bench_gpu_sampler", _PATH)
gpu_sampler = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = gpu_sampler  # dataclasses look their module up there
_spec.loader.exec_module(gpu_sampler)
MIB = 1024 * 1024


class ScriptedNvml:
    class NVMLError(Exception):
        pass

    def __init__(self, util: list[int], used_mib: list[int], baseline_mib: int, gpus: int = 1) -> None:
        self.util, self.used = list(util), [baseline_mib, *used_mib]
        self.gpus, self.done, self.shutdowns = gpus, threading.Event(), 0

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetName(self, handle: str) -> bytes:
        return b"Scripted H200"

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> SimpleNamespace:
        if not self.util:
            self.done.set()
            raise self.NVMLError("no more readings")
        return SimpleNamespace(gpu=self.util.pop(0))

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> SimpleNamespace:
        return SimpleNamespace(used=self.used.pop(0) * MIB if self.used else 0, total=141000 * MIB)


def test_busy_fractions_and_peak_memory_from_samples() -> None:
    nvml = ScriptedNvml(util=[0, 0, 50, 100, 100, 90, 0], used_mib=[1200, 9000, 30000, 31000, 30500, 30500, 2000],
                        baseline_mib=800)
    with gpu_sampler.GpuSampler(interval_s=0.001, nvml=nvml) as sampler:
        assert nvml.done.wait(10)
    r = sampler.reading
    assert r.available and r.gpu_name == "Scripted H200" and r.samples == 7
    assert r.busy_fraction == pytest.approx(340 / 700, abs=1e-4)  # whole process, start-up included
    assert r.busy_fraction_active == pytest.approx(340 / 400, abs=1e-4)  # first to last busy sample
    assert r.peak_mem_mib == 31000 and r.baseline_mem_mib == 800
    assert nvml.shutdowns == 1
    assert set(r.as_json()) == {"available", "reason", "gpu_name", "busy_fraction", "busy_fraction_active",
                                "peak_mem_mib", "baseline_mem_mib", "samples"}


def test_no_gpu_gives_reason_and_no_figures() -> None:
    with gpu_sampler.GpuSampler(nvml=ScriptedNvml([], [], 0, gpus=0)) as sampler:
        pass
    r = sampler.reading
    assert not r.available and r.reason == "NVML reports no GPU"
    assert (r.busy_fraction, r.busy_fraction_active, r.peak_mem_mib, r.samples) == (None, None, None, 0)
