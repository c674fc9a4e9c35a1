"""One place that picks the device and names it, so no notebook hard-codes ``.cuda()``.

It imports nothing of reftx: saving a result (``course.results``) names the
device without loading the models.
"""

from __future__ import annotations

import ctypes
import os
import platform

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` means CUDA when available, else CPU; ``cuda`` without a GPU is an error, not a silent CPU
    run."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of auto, cpu, cuda (or cuda:N), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(device)


def cpu_model() -> str:
    """The processor's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def keep_freed_cpu_memory() -> bool:
    """Stop glibc from handing freed heap memory back to the OS; True if the C library accepted it.

    Why: PyTorch allocates CPU tensors with ``malloc``. glibc returns the free memory at the top
    of its heap to the OS once more than its trim threshold lies there, so a training step that
    frees its activations gives their pages back and the next step takes them again, one page fault
    per 4 KiB. How many a step takes depends on the heap layout left by everything that ran before
    it in the process. CUDA's caching allocator keeps its memory by design; this does the same for
    the CPU heap (trim threshold 2^31 - 1 bytes, mmap threshold fixed at glibc's 32 MiB maximum).
    The process then keeps its peak heap until it exits. It cannot be undone, and it changes
    nothing on a C library that is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def device_name(device: torch.device) -> str:
    """A human-readable name for provenance records, e.g. 'NVIDIA H100 80GB HBM3' or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({cpu_model()}, {torch.get_num_threads()} threads)"


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
