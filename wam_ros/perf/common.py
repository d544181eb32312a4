"""Measuring helpers shared by several benchmarks: timing, process usage, the device's state."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def median_ms(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))


def process_usage(pid: int) -> dict[str, float]:
    """User and system CPU seconds and minor page faults of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {"user_s": int(fields[11]) / tick, "system_s": int(fields[12]) / tick, "minor_faults": int(fields[7])}


def device_absent(device: str) -> str | None:
    """Why `device` cannot run here, or None when it can."""
    import torch

    kind = torch.device(device)
    if kind.type == "cpu":
        return None
    if kind.type != "cuda":
        return f"device {device!r}: only cpu and cuda are benchmarked"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)"
    if kind.index is not None and kind.index >= torch.cuda.device_count():
        return f"{device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def synchronize(device: str) -> None:
    """Waits for the device's queued kernels, so a host timer measures them."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(device: str) -> dict[str, float]:
    """The device's peak allocation since the last reset (cuda), or this process's peak resident set
    (cpu: the whole process, imports included)."""
    import resource

    import torch

    if torch.device(device).type == "cuda":
        return {"cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    return {"process_rss_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
