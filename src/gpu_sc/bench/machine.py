"""Who ran the benchmark: host name, CPU, memory, GPU."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from ..backends import cuda_status

__all__ = ["cpu_model", "machine_info"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _mem_total_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_info(with_gpu: bool) -> dict[str, Any]:
    """Host, OS, CPU model and cores (all, and usable by this process), memory, GPU."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    info: dict[str, Any] = {
        "hostname": platform.node() or "unknown",
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "memory_bytes": _mem_total_bytes(),
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": None,
    }
    if with_gpu:
        status = cuda_status()
        info["gpu"] = status.device_name
        info["cuda_status"] = status.reason
        if status.available:
            import cupy

            free, total = cupy.cuda.runtime.memGetInfo()
            info["gpu_memory_bytes"] = int(total)
            info["cuda_runtime"] = int(cupy.cuda.runtime.runtimeGetVersion())
    return info
