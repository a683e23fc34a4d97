"""``gpu_mem_log.csv`` (``LOG_GPU_MEM=1``): used / total memory of every NVIDIA GPU at a fixed interval.

Read through NVML (``pynvml`` from ``nvidia-ml-py``), not by spawning ``nvidia-smi``. Where NVML
cannot start (no NVIDIA driver or GPU) one warning is logged and no file is written.
The columns keep the predecessor's names where they overlap:
``timestamp, gpu_index, gpu_name, mem_used_mib, mem_total_mib, util_gpu_pct, event``.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

COLUMNS = ("timestamp", "gpu_index", "gpu_name", "mem_used_mib", "mem_total_mib", "util_gpu_pct", "event")
_MIB = 1024 * 1024


class GpuMemoryLogger:
    """Appends one CSV row per GPU every ``interval_s`` seconds from a daemon thread.

    ``nvml`` is the NVML binding (default: ``pynvml``); ``clock`` gives the wall time written in
    ``timestamp``. Use ``start()`` / ``stop()`` or a ``with`` block; ``sample(event)`` writes
    rows at once (e.g. ``"start"``, ``"stop"``).
    """

    def __init__(self, path: Path, *, interval_s: float = 10.0, nvml: Any = None,
                 clock: Callable[[], float] = time.time, log: logging.Logger | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.path = Path(path)
        self.interval_s = interval_s
        self._nvml = nvml
        self._clock = clock
        self._log = log or logger
        self._handles: list[tuple[int, str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> bool:
        """Start NVML and the sampling thread; False (after one warning) when no NVIDIA GPU is usable."""
        if self._started:
            return True
        if not self._open():
            return False
        self._started = True
        self.sample("start")
        self._thread = threading.Thread(target=self._loop, name="gpu-mem-log", daemon=True)
        self._thread.start()
        return True

    def _open(self) -> bool:
        nvml = self._nvml
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as exc:
                return self._unavailable(f"pynvml is not installed: {exc}")
        nvml_error = getattr(nvml, "NVMLError", OSError)
        try:
            nvml.nvmlInit()
        except (OSError, nvml_error) as exc:
            return self._unavailable(str(exc) or type(exc).__name__)
        self._nvml = nvml
        count = nvml.nvmlDeviceGetCount()
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            self._handles.append((index, name.decode() if isinstance(name, bytes) else str(name), handle))
        if not self._handles:
            nvml.nvmlShutdown()
            return self._unavailable("NVML reports no GPU")
        return True

    def _unavailable(self, why: str) -> bool:
        self._log.warning("LOG_GPU_MEM is on but no NVIDIA GPU can be read (%s); %s is not written",
                          why, self.path.name)
        return False

    def sample(self, event: str = "interval") -> int:
        """Append one row per GPU now; returns the number of rows written (0 when not started)."""
        if not self._started:
            return 0
        stamp = datetime.fromtimestamp(self._clock(), tz=timezone.utc).isoformat(timespec="seconds")
        rows = []
        for index, name, handle in self._handles:
            mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            rows.append((stamp, index, name, mem.used // _MIB, mem.total // _MIB, util.gpu, event))
        with self._lock:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(COLUMNS)
                writer.writerows(rows)
        return len(rows)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample("interval")

    def stop(self) -> None:
        """Write a last ``stop`` row, end the thread and shut NVML down."""
        if not self._started:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample("stop")
        self._started = False
        self._nvml.nvmlShutdown()

    def __enter__(self) -> GpuMemoryLogger:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
