"""Attention statistics per layer and head next to uniform attention over the same keys (headless).

``padded_stats``/``uniform_stats`` take zero-padded batches (B, L, H, T, S); the others take records."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .extract import AttentionRecord

Records = AttentionRecord | Sequence[AttentionRecord]


def _visible(k_len: Tensor, t: int, s: int, causal: bool) -> Tensor:
    """(B, T, S) bool: the keys each query row can see (within its example; for causal, not ahead)."""
    j = torch.arange(s)
    visible = j[None, None, :] < k_len[:, None, None]  # (B, 1, S)
    if causal:
        visible = visible & (j[None, :] <= torch.arange(t)[:, None])  # (B, T, S)
    return visible.expand(-1, t, s)


def _row_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of x (B, L, H, T) over the valid rows (B, T); NaN where no row is valid."""
    count = valid.sum(-1)[:, None, None]  # (B, 1, 1)
    total = (x * valid[:, None, None]).sum(-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.nan)


def padded_stats(
    att: Tensor, q_len: Tensor, k_len: Tensor, kind: str, key_mask: Tensor | None = None
) -> dict[str, Tensor]:
    """Per-example statistics (B, L, H) of zero-padded ``kind`` attention ``att`` (B, L, H, T, S), each a mean
    over rows with a choice: normalised ``entropy``, ``distance`` |j - i S / T|, mass on the aligned key
    (``diagonal``), the one before (``previous``), key 0 (``first``) and masked keys (``key_mass``)."""
    b, n_layers, n_heads, t, s = att.shape
    visible = _visible(k_len, t, s, kind == "decoder")  # (B, T, S)
    n_keys = visible.sum(-1)  # (B, T)
    i, j = torch.arange(t), torch.arange(s)
    rows = (i[None] < q_len[:, None]) & (n_keys > 1)  # (B, T) rows that have a choice
    p = att * visible[:, None, None]  # (B, L, H, T, S)
    log_n = torch.log(n_keys.clamp(min=2).float())[:, None, None]  # (B, 1, 1, T)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum(-1) / log_n  # (B, L, H, T)
    aligned = i[None] * (k_len / q_len.clamp(min=1))[:, None]  # (B, T) fractional key position
    distance = (p * (j - aligned[..., None]).abs()[:, None, None]).sum(-1)
    aligned_idx = torch.minimum(aligned.round().long(), (k_len - 1)[:, None])  # (B, T)
    idx = aligned_idx[:, None, None, :, None].expand(b, n_layers, n_heads, t, 1)
    stats = {
        "entropy": _row_mean(entropy, rows),
        "distance": _row_mean(distance, rows),
        "diagonal": _row_mean(p.gather(-1, idx)[..., 0], rows),
        "previous": _row_mean(p.gather(-1, (idx - 1).clamp(min=0))[..., 0], rows & (aligned_idx > 0)),
        "first": _row_mean(p[..., 0], rows),
    }
    if key_mask is not None:
        stats["key_mass"] = _row_mean((p * key_mask[:, None, None, None, :s]).sum(-1), rows)
    return stats


def uniform_stats(
    att: Tensor, q_len: Tensor, k_len: Tensor, kind: str, key_mask: Tensor | None = None
) -> dict[str, Tensor]:
    """``padded_stats`` of uniform attention over visible keys: the baseline length-dependent stats need."""
    visible = _visible(k_len, att.shape[-2], att.shape[-1], kind == "decoder").float()  # (B, T, S)
    uniform = (visible / visible.sum(-1, keepdim=True).clamp(min=1))[:, None, None].expand_as(att)
    return padded_stats(uniform, q_len, k_len, kind, key_mask)


def stack_records(records: Records, kind: str) -> tuple[Tensor, Tensor, Tensor]:
    """Zero-pad records' ``kind`` attention into (B, L, H, T, S), with the query and key lengths (B,)."""
    records = [records] if isinstance(records, AttentionRecord) else list(records)
    shapes = [r.attention(kind).shape for r in records]
    if len(sizes := {s[:2] for s in shapes}) > 1:
        raise ValueError(f"records come from models of different sizes (layers, heads): {sorted(sizes)}")
    att = torch.zeros(len(records), *shapes[0][:2], max(s[2] for s in shapes), max(s[3] for s in shapes))
    for b, r in enumerate(records):
        att[b, :, :, : shapes[b][2], : shapes[b][3]] = torch.from_numpy(r.attentions[kind])
    return att, torch.tensor([s[2] for s in shapes]), torch.tensor([s[3] for s in shapes])


def _summarise(stats: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Average per-example stats (B, L, H) over examples, ignoring undefined (NaN) ones."""
    return {name: torch.nanmean(v, dim=0).numpy() for name, v in stats.items()}  # (L, H) each


def attention_stats(records: Records, kind: str) -> dict[str, np.ndarray]:
    """``{stat: (layers, heads)}`` averaged over records (see ``padded_stats``), to compare with uniform."""
    return _summarise(padded_stats(*stack_records(records, kind), kind))


def uniform_baseline(records: Records, kind: str) -> dict[str, np.ndarray]:
    """``attention_stats`` of uniform attention over the same keys: what "no structure" looks like."""
    return _summarise(uniform_stats(*stack_records(records, kind), kind))
