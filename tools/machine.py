"""The benchmarks' hold on the machine: what they set in the process before timing anything."""

from __future__ import annotations

import ctypes


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
