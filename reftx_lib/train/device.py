"""Which device (so no notebook hard-codes ``.cuda()``), its name and memory; imports nothing of reftx."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a silent CPU run."""
    if isinstance(device, torch.device):
        return device
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of auto, cpu, cuda (or cuda:N), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(device)


def current_rss_mb() -> float:
    """Resident memory of this process right now (Linux), in MiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory torch allocated on CUDA; on CPU the process-wide RSS (compare only like runs)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else current_rss_mb()
