"""One place that picks the device and measures it, so no notebook hard-codes ``.cuda()``."""
from __future__ import annotations

import os
import platform

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of auto, cpu, cuda (or cuda:N), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    """A human-readable name for provenance records, e.g. 'NVIDIA H100 80GB HBM3' or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU ({name}, {torch.get_num_threads()} threads)"


def current_rss_mb() -> float:
    """Resident memory of this process right now (Linux), in MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; on CPU the process's current RSS.

    CPU RSS is process-wide (data, tokenizer and Python included), so compare it
    only between runs made the same way.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return current_rss_mb()
