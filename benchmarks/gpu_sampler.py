"""GPU busy fraction and peak memory of one timed run, sampled through NVML in a thread.

NVML's ``utilization.gpu`` is the share of the last sample period in which at least one kernel
ran; its mean over the run is the busy fraction. Memory is the device's used memory (every
process), so the peak includes what other processes hold: ``baseline_mem_mib`` is the reading
before the run starts. Without an NVIDIA GPU (or without ``pynvml``) every figure is None and
``reason`` says why; the benchmark prints them as "n/a".
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

_MIB = 1024 * 1024


@dataclass
class GpuReading:
    """What one run looked like from the GPU's side (all None when there is no GPU)."""

    available: bool
    reason: str = ""
    gpu_name: str | None = None
    busy_fraction: float | None = None
    busy_fraction_active: float | None = None
    peak_mem_mib: int | None = None
    baseline_mem_mib: int | None = None
    samples: int = 0
    utilisation: list[int] = field(default_factory=list, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {"available": self.available, "reason": self.reason, "gpu_name": self.gpu_name,
                "busy_fraction": self.busy_fraction, "busy_fraction_active": self.busy_fraction_active,
                "peak_mem_mib": self.peak_mem_mib, "baseline_mem_mib": self.baseline_mem_mib,
                "samples": self.samples}


def open_nvml(index: int = 0, nvml: Any = None) -> tuple[Any, Any, str] | str:
    """(NVML binding, device handle, GPU name), or the reason there is none.

    ``nvml`` is the binding to use (default ``pynvml``; tests pass a scripted one).
    """
    pynvml = nvml
    if pynvml is None:
        try:
            import pynvml
        except ImportError as exc:
            return f"pynvml is not installed: {exc}"
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() <= index:
            pynvml.nvmlShutdown()
            return "NVML reports no GPU"
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(handle)
    except pynvml.NVMLError as exc:
        return f"NVML unavailable: {exc}"
    return pynvml, handle, name.decode() if isinstance(name, bytes) else str(name)


class GpuSampler:
    """``with GpuSampler() as s: run()`` then ``s.reading``; samples every ``interval_s`` seconds."""

    def __init__(self, interval_s: float = 0.1, index: int = 0, nvml: Any = None) -> None:
        self.interval_s, self.index, self._binding = interval_s, index, nvml
        self.reading = GpuReading(available=False, reason="not started")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        self._handle: Any = None
        self._mem: list[int] = []

    def __enter__(self) -> GpuSampler:
        opened = open_nvml(self.index, self._binding)
        if isinstance(opened, str):
            self.reading = GpuReading(available=False, reason=opened)
            return self
        self._nvml, self._handle, name = opened
        self.reading = GpuReading(available=True, gpu_name=name)
        self.reading.baseline_mem_mib = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used // _MIB
        self._thread = threading.Thread(target=self._loop, name="bench-gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
                used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used // _MIB
            except self._nvml.NVMLError:
                continue  # one missed sample does not change a mean over hundreds
            self.reading.utilisation.append(int(util))
            self._mem.append(int(used))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()
        self.reading = summarise(self.reading, self._mem)


def summarise(reading: GpuReading, mem: list[int]) -> GpuReading:
    """Fill the fractions and the peak from the raw samples.

    ``busy_fraction`` covers the whole process (start-up and model build included);
    ``busy_fraction_active`` only the span from the first to the last sample with a kernel running,
    i.e. the part of the run in which the GPU had work at all.
    """
    util = reading.utilisation
    reading.samples = len(util)
    if not util:
        return reading
    reading.busy_fraction = round(sum(util) / (100.0 * len(util)), 4)
    active = [i for i, u in enumerate(util) if u > 0]
    if active:
        span = util[active[0]:active[-1] + 1]
        reading.busy_fraction_active = round(sum(span) / (100.0 * len(span)), 4)
    else:
        reading.busy_fraction_active = 0.0
    reading.peak_mem_mib = max(mem) if mem else None
    return reading


def timed(fn: Any, interval_s: float = 0.1) -> tuple[Any, float, GpuReading]:
    """(fn(), wall seconds, GPU reading) with the sampler running around the call."""
    with GpuSampler(interval_s) as sampler:
        start = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - start
    return result, wall, sampler.reading
