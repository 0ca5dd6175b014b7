"""What an epoch used of the machine: host memory always, GPU memory and utilisation on CUDA only.

``EpochUsage(device)`` starts a measurement (it resets CUDA's peak-memory counter); ``finish()`` returns
the epoch row's fields: ``rss_mb`` (resident set of this process, MiB), and on CUDA ``peak_gpu_mem_mb``
(the most memory PyTorch's allocator held during the epoch, MiB) and ``gpu_util`` (the driver's
utilisation percentage over its last sample period, where NVML can be read; absent otherwise).
"""

from __future__ import annotations

import os
import resource

import torch


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc; the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def gpu_util(device: torch.device) -> float | None:
    """GPU utilisation in percent, or None where the driver's management library cannot be read."""
    try:
        return float(torch.cuda.utilization(device))
    except Exception:  # noqa: BLE001 - pynvml missing, no NVML, MIG slices: the number is optional
        return None


class EpochUsage:
    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def finish(self) -> dict:
        row = {"rss_mb": rss_mb()}
        if self.device.type == "cuda":
            row["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            util = gpu_util(self.device)
            if util is not None:
                row["gpu_util"] = util
        return row
