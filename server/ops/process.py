"""The process's own resource use: CPU seconds, resident memory, machine memory, and the GPU through NVML when a
CUDA provider is in use and ``nvidia-ml-py`` is installed (absent on CPU machines: the GPU figures are then ``None``).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class ProcessSample:
    wall: float
    """``time.monotonic()`` when sampled."""
    cpu_s: float
    """CPU seconds used by the process (all threads) since it started."""
    rss_bytes: int
    memory_total_bytes: int | None
    gpu_utilization: float | None = None
    """0..1, the busiest GPU's utilisation over NVML's last sample period."""
    gpu_memory_used_bytes: int | None = None
    gpu_memory_total_bytes: int | None = None


class ProcessProbe:
    """Reads the process figures; ``gpu=True`` tries NVML once and stays quiet if it is not there."""

    def __init__(self, *, gpu: bool = False) -> None:
        self.cores = os.cpu_count() or 1
        self._nvml: Any = None
        self._handles: list[Any] = []
        if gpu:
            self._init_nvml()

    def sample(self) -> ProcessSample:
        gpu_util = gpu_used = gpu_total = None
        if self._handles:
            try:
                utils = [self._nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100 for h in self._handles]
                mems = [self._nvml.nvmlDeviceGetMemoryInfo(h) for h in self._handles]
                gpu_util = max(utils)
                gpu_used = sum(int(m.used) for m in mems)
                gpu_total = sum(int(m.total) for m in mems)
            except Exception as exc:  # a GPU reset or a driver hiccup must not break a scrape
                log.debug("NVML sample failed: %r", exc)
        return ProcessSample(time.monotonic(), time.process_time(), rss_bytes(), memory_total_bytes(),
                             gpu_util, gpu_used, gpu_total)  # fmt: skip

    def _init_nvml(self) -> None:
        try:
            import pynvml  # type: ignore[import-not-found]

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception as exc:  # not installed, no driver, no device
            log.debug("GPU metrics unavailable: %s", exc)
            self._handles = []


def rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``), else the peak from ``getrusage``."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def memory_total_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * _PAGE
    except (ValueError, OSError, AttributeError):
        return None
