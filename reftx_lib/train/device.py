"""One place that picks the device and measures it, so no notebook hard-codes ``.cuda()``."""
from __future__ import annotations

import ctypes
import os
import platform
import time

import torch

from ..data.batching import pad_batch
from .checkpoint import MODEL_CLASSES


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


# ------------------------------------------------------- training-step memory
def _peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM, Linux), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("VmHWM not found in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _train_steps(model: torch.nn.Module, ids: torch.Tensor, steps: int, device: torch.device) -> None:
    """``steps`` forward + backward + AdamW steps on one batch, as the trainer does them."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)
    for _ in range(steps):
        with autocast:
            out = model(ids, labels=ids, return_logits=False)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()


def _build(model_class: str, config: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return MODEL_CLASSES[model_class].from_config(config)


def _training_memory_worker(model_class: str, config: dict, rows: list[list[int]], steps: int, queue) -> None:
    """Runs in a fresh (spawned) process: build the model, train ``steps`` steps, report the peak RSS rise."""
    try:
        import gc

        torch.set_num_threads(1)  # per-thread scratch buffers would make the number depend on the machine
        # Warm up on a toy model first: the first backward and optimizer step load code and allocate
        # one-off buffers (tens of MiB) that would otherwise be charged to the model being measured.
        toy = {**config, "vocab_size": 64, "d_model": 8, "n_heads": 1, "d_ff": 8, "n_layers": 1}
        toy_ids = torch.tensor([[10, 11, 12, config["sep_token_id"], 13, 14, config["eos_token_id"]]] * 2)
        _train_steps(_build(model_class, toy).train(), toy_ids, 1, torch.device("cpu"))
        ids = pad_batch(rows, config["pad_token_id"])  # (B, T)
        model = _build(model_class, config).train()
        gc.collect()
        base = current_rss_mb()
        if not _reset_peak_rss():
            raise OSError("cannot reset the peak RSS (/proc/self/clear_refs); measure on Linux")
        _train_steps(model, ids, steps, torch.device("cpu"))
        queue.put(("ok", _peak_rss_mb() - base))
    except BaseException as exc:  # report, so the parent raises instead of waiting forever
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def training_memory_mb(model_class: str, config: dict, rows: list[list[int]], steps: int = 3,
                       device: str | torch.device = "cpu", timeout_s: float = 600.0) -> float:
    """Memory one training step of a model needs on one batch, in MiB, measured fairly.

    ``model_class`` is ``"ReferenceTransformer"`` or ``"ReferenceDecoderOnly"``, ``config``
    a ``ModelConfig`` dict (``model.config.to_dict()``) and ``rows`` the batch as token
    lists (right-padded here). ``steps`` forward + backward + AdamW steps are run.

    * CPU: in a *spawned* subprocess, so nothing else the notebook holds (data, other
      models, the allocator's cache) is counted; one thread; one-off library start-up
      costs are paid first on a toy model of the same class. The result is the peak
      resident set size during the steps minus the RSS right after the model was
      built: activations, gradients, AdamW's two moment buffers and the temporary
      buffers of the backward pass, but not the weights themselves.
    * CUDA: in this process, ``torch.cuda.max_memory_allocated`` during the steps minus
      the memory allocated right after the model was moved to the GPU (bf16 autocast,
      as the trainer uses).
    """
    if model_class not in MODEL_CLASSES:
        raise ValueError(f"unknown model class {model_class!r}; allowed values: {list(MODEL_CLASSES)}")
    device = resolve_device(device)
    if device.type == "cuda":
        model = _build(model_class, config).to(device).train()
        ids = pad_batch(rows, config["pad_token_id"])
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        _train_steps(model, ids.to(device), steps, device)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del model
        torch.cuda.empty_cache()
        return (peak - base) / 2**20
    import multiprocessing as mp
    import queue as queue_module

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_training_memory_worker, args=(model_class, dict(config), rows, steps, q))
    proc.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                status, value = q.get(timeout=1.0)
                break
            except queue_module.Empty:
                if not proc.is_alive():  # e.g. killed for memory, or it could not import its target
                    raise RuntimeError(f"the memory-measurement subprocess died (exit code {proc.exitcode}); "
                                       "run from a file or a notebook, not from stdin") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the memory measurement did not finish within {timeout_s} s") from None
    finally:
        if proc.is_alive() and time.monotonic() > deadline:
            proc.kill()
        proc.join(timeout=30)
    if status != "ok":
        raise RuntimeError(f"memory measurement failed in the subprocess: {value}")
    return float(value)
