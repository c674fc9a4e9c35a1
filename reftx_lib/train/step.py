"""One training step, the same everywhere it runs (trainer, Exp 1's memory probe, benchmarks, notebooks),
so what one of them measures is what the others do. Inputs are built and checked on the host
(``training_inputs``), so a step on an accelerator never waits for a device-to-host copy."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from ..model.packing import check_batch


def training_inputs(model: torch.nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward arguments for training ``model`` on right-padded rows ``ids`` (B, L), checked on the host,
    where the encoder-decoder's split at SEP is also done because it needs host values."""
    check_batch(model, ids)
    if model.is_encoder_decoder:
        src, tgt, labels = model.split_packed(ids, ids)
        return {"src_ids": src, "tgt_ids": tgt, "labels": labels}
    return {"input_ids": ids, "labels": ids}


def counted_targets(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Tokens the training loss counts in right-padded rows ``ids`` (B, L) (for the encoder-decoder and the
    prefix LM only those after each row's first SEP), so tokens per second compare across architectures."""
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
    """Forward (``loss_fn()``, under ``autocast``), backward, clip (global norm; ``None``: off), optimizer
    step, schedule step. Returns the loss unread, so a GPU step never waits for the host; gradients are
    set to None after the step, so they take no memory during the next forward pass."""
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
