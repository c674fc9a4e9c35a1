"""One training step, the same everywhere it runs.

The trainer, the memory probe of Exp 1, both benchmarks and the notebooks all
train through ``training_step``: what one of them measures is what the others do.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch


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
