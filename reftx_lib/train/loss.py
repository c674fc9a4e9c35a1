"""The training loss, with the output head fused into it for CPU training.

With an 8k vocabulary the output head is the costliest part of a small model's step: its (N, V) logits
are the largest tensor, and the plain loss passes over them (or a gradient as large) about six times.
``fused_head_cross_entropy`` does the same maths a cache-sized chunk of rows at a time and computes the
gradients during the forward pass, so the logits never exist; ``training_loss`` uses it where
``fused_loss_applies`` (eager float32 steps on a CPU) and the plain path elsewhere."""

from __future__ import annotations

import torch

from ..model.transformer import cross_entropy

LOSS_CHUNK_BYTES = 4 * 2**20  # logits per chunk of the fused loss (at least d_model rows): one L2 cache


def training_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``loss`` and ``n_tokens`` of ``model`` on forward arguments ``inputs`` (labels included): the model
    stops before its head (``head=False``), so the head and the loss can run here fused."""
    out = model(**inputs, head=False)
    hidden, labels = out["hidden"], out["labels"]  # (B, T, D), (B, T)
    if labels is None:
        raise ValueError("training_loss needs labels in its inputs, e.g. labels=input_ids")
    base = getattr(model, "module", model)  # the model a DistributedDataParallel wraps
    pad = base.config.pad_token_id
    if fused_loss_applies(hidden):
        return fused_head_cross_entropy(hidden, base.lm_head.weight, labels, pad)
    return cross_entropy(base.lm_head(hidden), labels, pad)


def fused_loss_applies(hidden: torch.Tensor) -> bool:
    """Only eager float32 training on a CPU, where it was measured: the chunks are sized to a CPU cache,
    autocast would take the softmax in low precision, and a compiled graph fuses the plain loss itself."""
    return (
        hidden.device.type == "cpu"
        and hidden.dtype == torch.float32
        and hidden.requires_grad
        and torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")
    )


class _HeadCrossEntropy(torch.autograd.Function):
    """Sum over rows of ``weight_row * CE(hidden @ head.T, target)``, gradients computed in forward: a
    row's gradient with respect to its logits is ``softmax - one_hot(target)``, and the gradients of
    ``hidden`` and ``head`` follow by the head's two matmuls."""

    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, row_weight: torch.Tensor
    ) -> torch.Tensor:
        # hidden (N, D), head (V, D), targets (N,) in [0, V), row_weight (N,) float
        # A chunk's logits fill about the cache; with at least D rows, adding the chunk's (V, D) share
        # of the head's gradient never moves more memory than its (rows, V) logits did.
        rows = max(LOSS_CHUNK_BYTES // (head.size(0) * hidden.element_size()), head.size(1))
        grad_hidden = torch.empty_like(hidden)  # (N, D)
        grad_head = None  # (V, D), written by the first chunk, then accumulated
        total = hidden.new_zeros(())
        for start in range(0, hidden.size(0), rows):
            h, t, w = (x[start : start + rows] for x in (hidden, targets, row_weight))
            logits = h @ head.t()  # (c, V)
            lse = logits.logsumexp(dim=-1)  # (c,)
            total += ((lse - logits.gather(1, t[:, None]).squeeze(1)) * w).sum()
            grad = logits.sub_(lse[:, None]).exp_()  # (c, V) softmax, in place of the logits
            grad[torch.arange(t.size(0)), t] -= 1.0  # softmax - one_hot
            grad.mul_(w[:, None])
            torch.mm(grad, head, out=grad_hidden[start : start + rows])  # (c, D)
            grad_head = grad.t() @ h if grad_head is None else grad_head.addmm_(grad.t(), h)  # (V, D)
        ctx.save_for_backward(grad_hidden, grad_head)
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grad_hidden, grad_head = ctx.saved_tensors
        if bool(grad_total == 1):  # a plain loss.backward(): reading the scalar costs nothing on a CPU
            # Hand over the stored gradients as they are: scaling them by 1 would copy a (V, D) matrix
            # and an (N, D) one. Autograd adds nothing into a tensor another reference still holds.
            return grad_hidden, grad_head, None, None
        return grad_hidden * grad_total, grad_head * grad_total, None, None


def fused_head_cross_entropy(
    hidden: torch.Tensor, head: torch.Tensor, labels: torch.Tensor, pad_id: int
) -> dict[str, torch.Tensor]:
    """``cross_entropy(hidden @ head.T, labels, pad_id)`` without the logits: hidden (B, T, D), head (V, D),
    labels (B, T). Same loss and gradients as the plain path up to float rounding (tests compare them)."""
    labels = labels.reshape(-1)  # (N,)
    counted = (labels >= 0) & (labels != pad_id)  # (N,)
    n_tokens = counted.sum()
    row_weight = counted / n_tokens  # (N,): each counted token's share of the mean; 0/0 = nan, as plain
    loss = _HeadCrossEntropy.apply(hidden.reshape(-1, hidden.size(-1)), head, labels.clamp(min=0), row_weight)
    return {"loss": loss, "n_tokens": n_tokens}
