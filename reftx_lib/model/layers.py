"""Transformer building blocks: positions, masks, attention, the encoder and decoder layers.

Both models are assembled from these pieces, so the encoder-decoder and the decoder-only
model differ only in how the pieces are wired, never in the maths.
Shapes: B batch, T query length, S key length, H heads, D d_model, Dh head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

KVCache = dict[str, torch.Tensor | int]  # "k", "v" (B, H, room, Dh) buffers; "length": positions filled


def append_to_cache(cache: KVCache, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write new keys and values (B, H, T, Dh) after the cached ones; return all of them (B, H, S, Dh).
    The buffers double when full, like a list's: N steps copy O(N) keys, not O(N^2) as a concatenation."""
    n, t = cache.get("length", 0), k.size(2)
    if "k" not in cache or n + t > cache["k"].size(2):
        room = max(2 * (n + t), 16)
        for name, new in (("k", k), ("v", v)):
            buffer = new.new_empty(new.size(0), new.size(1), room, new.size(3))  # (B, H, room, Dh)
            if n:
                buffer[:, :, :n] = cache[name][:, :, :n]
            cache[name] = buffer
    cache["k"][:, :, n : n + t] = k
    cache["v"][:, :, n : n + t] = v
    cache["length"] = n + t
    return cache["k"][:, :, : n + t], cache["v"][:, :, : n + t]


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sin/cos positions (Vaswani et al. 2017, 3.5): no parameters, the same for both architectures.
    ``scale`` (``ModelConfig.position_scale``) sizes them next to the N(0, 0.02) token embeddings."""

    def __init__(self, d_model: int, max_len: int, scale: float = 1.0) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)  # (max_len, 1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
        self.register_buffer("pe", pe * scale, persistent=False)  # (max_len, D)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        return self.pe[offset : offset + length]  # (T, D), broadcast over the batch by the caller


class LearnedPositionalEmbedding(nn.Module):
    """A trained position table, as in GPT-2 (``positions="learned"``): it costs parameters and knows no
    position it was not trained on, but can grow with the token embeddings."""

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, d_model))  # (max_len, D), initialized by the model

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        return self.weight[offset : offset + length]  # (T, D)


def causal_mask(t: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool, True where query i may attend to key j (j <= i)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


def key_padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, 1, 1, S) bool, True for real tokens: broadcasts over heads and queries."""
    return (ids != pad_id)[:, None, None, :]


def prefix_lm_mask(prefix_len: torch.Tensor, t: int) -> torch.Tensor:
    """(B, 1, T, T) bool for a prefix LM: query i may attend to key j if j is in its row's prefix
    (j < prefix_len) or j <= i. The prefix is read both ways, like an encoder's input; the rest stays
    causal. Right padding lies after the prefix, so no real token sees it."""
    keys = torch.arange(t, device=prefix_len.device)
    return (keys[None, :] < prefix_len[:, None])[:, None, None, :] | causal_mask(t, prefix_len.device)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with two equivalent paths: the fused
    ``F.scaled_dot_product_attention`` (fast, hides the probabilities) and the explicit
    ``softmax(QK^T / sqrt(Dh)) V`` that returns them for plots. Tests check that both agree."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = n_heads, d_model // n_heads, dropout
        # W_q, W_k, W_v stacked into one (3D, D) projection, as in nn.MultiheadAttention: one matmul for all.
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, y: torch.Tensor) -> torch.Tensor:
        b, t, _ = y.shape  # (B, T, n * D) stacked projections -> (n, B, H, T, Dh), views without copies
        return y.view(b, t, -1, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(
        self, x: torch.Tensor, memory=None, mask=None, is_causal=False, need_weights=False, cache=None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from x (B, T, D) to ``memory`` (B, S, D), or to x itself when memory is None.

        ``mask`` is bool, broadcastable to (B, H, T, S), True = may attend. With a ``cache``,
        self-attention appends its new keys and values to it and cross-attention computes them
        from ``memory`` once. Returns (B, T, D) and, if ``need_weights``, the probabilities (B, H, T, S).
        """
        if memory is not None:  # cross-attention: keys and values depend only on the encoder
            d = x.size(-1)
            w_q, w_kv = self.in_proj.weight.split([d, 2 * d])  # (D, D), (2D, D)
            b_q, b_kv = self.in_proj.bias.split([d, 2 * d])
            (q,) = self._split_heads(F.linear(x, w_q, b_q))  # (B, H, T, Dh)
            if cache is not None and "k" in cache:
                k, v = cache["k"], cache["v"]
            else:
                k, v = self._split_heads(F.linear(memory, w_kv, b_kv))  # (B, H, S, Dh) each
                if cache is not None:
                    cache["k"], cache["v"] = k, v
        else:
            q, k, v = self._split_heads(self.in_proj(x))  # (B, H, T, Dh) each
            if cache is not None:
                k, v = append_to_cache(cache, k, v)  # (B, H, S_past + T, Dh)
        t, s = q.size(2), k.size(2)
        if is_causal and t == 1:  # the newest query sees every key (a plain bool, even when torch.compile
            is_causal = False  # makes t symbolic: SDPA takes no symbolic is_causal)
        if is_causal and (mask is not None or t != s):  # query i sits at position i + S - T
            causal = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=s - t)
            mask, is_causal = (causal if mask is None else mask & causal), False
        dropout_p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
            if is_causal:
                scores = scores.masked_fill(~causal_mask(t, q.device), float("-inf"))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, dropout_p, self.training) @ v  # (B, H, T, Dh)
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, dropout_p, is_causal)  # (B, H, T, Dh)
        out = out.transpose(1, 2).reshape(x.size(0), x.size(1), -1)  # (B, T, D)
        return self.out_proj(out), weights


class FeedForward(nn.Module):
    """Position-wise MLP, D -> d_ff -> D with exact GELU. No dropout inside (as GPT-2): one more there
    slowed early learning (``tools.learning``)."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # (B, T, D)


class EncoderLayer(nn.Module):
    """Self-attention over the whole source (both ways, padding masked), then the FFN. Both layers are
    pre-LN, x + f(LN(x)): gradients stay well scaled without warmup tricks when training from scratch.
    Modules are created in the order that keeps a seed's initial weights and the parameters' order."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(c.d_model, c.n_heads, c.attention_dropout)
        self.ffn = FeedForward(c.d_model, c.d_ff)
        self.self_norm, self.ffn_norm = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, need_weights: bool = False) -> tuple:
        """x (B, S, D), mask (B, 1, 1, S) -> (B, S, D) and the self-attention weights (B, H, S, S)."""
        h, weights = self.self_attn(self.self_norm(x), mask=mask, need_weights=need_weights)
        x = x + self.drop(h)
        x = x + self.drop(self.ffn(self.ffn_norm(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder, then the FFN; without cross-attention,
    a GPT block: the decoder-only model is the decoder with its middle sub-layer removed."""

    def __init__(self, c: ModelConfig, cross_attention: bool) -> None:
        super().__init__()
        attention = (c.d_model, c.n_heads, c.attention_dropout)
        self.self_attn = MultiHeadAttention(*attention)
        self.self_norm = nn.LayerNorm(c.d_model)
        self.cross_attn = MultiHeadAttention(*attention) if cross_attention else None
        self.cross_norm = nn.LayerNorm(c.d_model) if cross_attention else None
        self.ffn = FeedForward(c.d_model, c.d_ff)
        self.ffn_norm = nn.LayerNorm(c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(
        self, x: torch.Tensor, mask=None, memory=None, memory_mask=None, cache=None, need_weights=False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, T, D), memory (B, S, D) -> (B, T, D), self weights (B, H, T, T'), cross weights (B, H, T, S).
        ``mask`` (B, 1, T, T') replaces the causal mask (a prefix LM's); right padding needs none."""
        caches = [None, None] if cache is None else [cache.setdefault(k, {}) for k in ("self", "cross")]
        h, self_w = self.self_attn(self.self_norm(x), None, mask, mask is None, need_weights, caches[0])
        x = x + self.drop(h)
        cross_w = None
        if self.cross_attn is not None:
            h, cross_w = self.cross_attn(
                self.cross_norm(x), memory, memory_mask, False, need_weights, caches[1]
            )
            x = x + self.drop(h)
        x = x + self.drop(self.ffn(self.ffn_norm(x)))
        return x, self_w, cross_w
