"""One training step, the same everywhere it runs.

The trainer, the memory probe of Exp 1, both benchmarks and the notebooks all
train through ``training_step``: what one of them measures is what the others do.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from ..data.batching import pad_batch
from ..model.transformer import BaseLanguageModel


def autocast_for(device: torch.device) -> AbstractContextManager:
    """The precision a step trains in: bf16 autocast on CUDA, plain float32 on a CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def training_step(
    model: torch.nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    grad_clip: float | None = None,
    autocast: AbstractContextManager | None = None,
) -> torch.Tensor:
    """Forward (``loss_fn()``, under ``autocast``), backward, clip, optimizer step, schedule step.

    Returns the loss tensor without reading it, so a GPU step never waits for the host.
    The gradients are dropped right after the optimizer step (``set_to_none``), so they
    do not occupy memory during the next forward pass. ``grad_clip`` clips the global
    norm of ``model``'s gradients; ``None`` leaves them as they are.
    """
    with autocast if autocast is not None else nullcontext():
        loss = loss_fn()
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return loss


def step_seconds(model: BaseLanguageModel, rows: list[list[int]], device: torch.device) -> float:
    """Wall-clock seconds of one ``training_step`` of a copy of ``model`` on ``rows``.

    ``model`` itself is not changed. The step is the trainer's: the inputs the model asks for
    (``training_inputs``) and only the loss (``return_logits=False``). On CUDA the clock waits
    for the device at both ends.
    """
    m = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.AdamW(m.parameters(), lr=1e-4)
    inputs = {k: v.to(device) for k, v in m.training_inputs(pad_batch(rows)).items()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    training_step(
        m,
        lambda: m(**inputs, check_ids=False, return_logits=False)["loss"],
        optimizer,
        autocast=autocast_for(device),
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
