"""How much memory training takes: the process's resident set, and one training step measured alone.

Exp 1 compares the memory a training step of each architecture needs; on a CPU that
is only fair in a fresh process (``training_memory_mb``), where nothing else the
notebook holds is counted.
"""

from __future__ import annotations

import time

import torch

from reftx_lib.data.batching import pad_batch
from reftx_lib.train.checkpoint import MODEL_CLASSES
from reftx_lib.train.device import current_rss_mb, resolve_device
from reftx_lib.train.loss import training_loss
from reftx_lib.train.step import autocast_for, training_step


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
    for _ in range(steps):
        training_step(
            model,
            lambda: training_loss(model, {"input_ids": ids, "labels": ids})["loss"],
            optimizer,
            autocast=autocast_for(device),
        )


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


def training_memory_mb(
    model_class: str,
    config: dict,
    rows: list[list[int]],
    steps: int = 3,
    device: str | torch.device = "cpu",
    timeout_s: float = 600.0,
) -> float:
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
                    raise RuntimeError(
                        f"the memory-measurement subprocess died (exit code {proc.exitcode}); "
                        "run from a file or a notebook, not from stdin"
                    ) from None
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the memory measurement did not finish within {timeout_s} s"
                    ) from None
    finally:
        if proc.is_alive() and time.monotonic() > deadline:
            proc.kill()
        proc.join(timeout=30)
    if status != "ok":
        raise RuntimeError(f"memory measurement failed in the subprocess: {value}")
    return float(value)
