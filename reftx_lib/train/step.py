"""One training step, the same everywhere it runs.

The trainer, the memory probe of Exp 1, both benchmarks and the notebooks all
train through ``training_step``: what one of them measures is what the others do.
Its inputs are built and checked on the host (``training_inputs``), so a step on an
accelerator never waits for a device-to-host copy.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from ..model.packing import check_batch


def training_inputs(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward arguments for training ``model`` on right-padded rows ``ids`` (B, L), checked on the host.

    The encoder-decoder's rows are split at SEP here too: the split needs each row's SEP
    position and the longest source and target, which are host values.
    """
    check_batch(model, ids)
    if model.is_encoder_decoder:
        src, tgt, labels = model.split_packed(ids, ids)
        return {"src_ids": src, "tgt_ids": tgt, "labels": labels}
    return {"input_ids": ids, "labels": ids}


def counted_targets(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Tokens the training loss counts in right-padded rows ``ids`` (B, L): every next token of a
    decoder-only row, the target after each row's first SEP for the encoder-decoder and the prefix LM.
    Tokens per second of training are only comparable between the architectures when counted this way."""
    c = model.config
    real = int((ids != c.pad_token_id).sum())
    if not (model.is_encoder_decoder or c.prefix_lm):
        return real - ids.size(0)  # the first token of a row is never a target
    sep = (ids == c.sep_token_id).int().argmax(dim=1)  # (B,) first SEP
    return real - int((sep + 1).sum())


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
