"""Transformer building blocks: positional encoding, masks, attention, residual layers.

Both models are assembled from these pieces, so the encoder-decoder and the
decoder-only variant differ only in how the pieces are wired, never in the maths.
Shapes: B batch, T query length, S key length, H heads, D d_model, Dh head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

KVCache = dict[str, torch.Tensor | int]  # "k", "v" (B, H, room, Dh) buffers; "length": positions filled


def append_to_cache(cache: KVCache, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write new keys and values (B, H, T, Dh) after the cached ones; return all of them (B, H, S, Dh).

    The buffers double when full, like a Python list: decoding N tokens copies O(N)
    cached keys in all, where concatenating at every step would copy O(N^2).
    """
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
    """Fixed sin/cos position signal (Vaswani et al. 2017, section 3.5), times ``scale``.

    It has no parameters, so it never competes with the token embedding for
    capacity, and both architectures get exactly the same position information.
    ``scale`` sets its size next to the token embeddings (``ModelConfig.position_scale``):
    the paper's unit amplitude is over 30 times the size of N(0, 0.02) embeddings.
    """

    def __init__(self, d_model: int, max_len: int, scale: float = 1.0) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)  # (max_len, 1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
        pe *= scale
        self.register_buffer("pe", pe, persistent=False)  # (max_len, D)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """The encoding (T, D) of positions ``offset .. offset+T-1``, broadcast over the batch by the
        caller."""
        return self.pe[offset : offset + length]


class LearnedPositionalEmbedding(nn.Module):
    """A trained position table, as in GPT-2 and BERT (``ModelConfig.positions="learned"``).

    Unlike the sinusoids it costs ``max_len * d_model`` parameters and knows no
    position it was not trained on, but it can grow with the token embeddings
    as training goes on instead of staying at its initial size.
    """

    def __init__(self, d_model: int, max_len: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, d_model))  # (max_len, D), initialized by the model

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        """The embedding (T, D) of positions ``offset .. offset+T-1``, broadcast over the batch by the
        caller."""
        return self.weight[offset : offset + length]


def causal_mask(t: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) bool, True where query i may attend to key j (j <= i)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


def key_padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, 1, 1, S) bool, True for real tokens: broadcasts over heads and queries."""
    return (ids != pad_id)[:, None, None, :]


def prefix_lm_mask(prefix_len: torch.Tensor, t: int) -> torch.Tensor:
    """(B, 1, T, T) bool for a prefix LM: query i may attend to key j if j is in its row's prefix
    (j < prefix_len) or j <= i. The prefix is read bidirectionally, like an encoder's input; the rest
    stays causal. Right padding lies after the prefix, so no real token sees it."""
    keys = torch.arange(t, device=prefix_len.device)
    return (keys[None, :] < prefix_len[:, None])[:, None, None, :] | causal_mask(t, prefix_len.device)


def combined_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B, 1, T, T) bool: causal AND not padding, for a padded causal self-attention."""
    return causal_mask(ids.size(1), ids.device) & key_padding_mask(ids, pad_id)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention with two equivalent paths.

    The fused ``F.scaled_dot_product_attention`` path is fast but hides the
    attention probabilities; the explicit ``softmax(QK^T / sqrt(d)) V`` path
    returns them for visualization. Tests check that both give the same output.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        # W_q, W_k, W_v stacked into one (3D, D) projection, as in nn.MultiheadAttention:
        # self-attention computes q, k and v with a single matmul instead of three.
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Also load checkpoints saved before q, k and v were fused (separate q_proj/k_proj/v_proj)."""
        legacy = [f"{prefix}{name}_proj." for name in "qkv"]
        if legacy[0] + "weight" in state_dict:
            for kind in ("weight", "bias"):
                state_dict[f"{prefix}in_proj.{kind}"] = torch.cat([state_dict.pop(p + kind) for p in legacy])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _split_heads(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T, n * D) stacked projections -> (n, B, H, T, Dh), views without copies."""
        b, t, _ = y.shape
        return y.view(b, t, -1, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from x (B, T, D) to ``memory`` (B, S, D), or to x itself when memory is None.

        ``mask`` is bool and broadcastable to (B, H, T, S), True = may attend.
        ``cache`` makes incremental decoding cheap: for self-attention the new
        keys/values are appended to it (``append_to_cache``); for cross-attention they are computed
        from ``memory`` once and reused at every later step.
        Returns the output (B, T, D) and, if ``need_weights``, the probabilities (B, H, T, S).
        """
        if memory is not None:  # cross-attention: keys/values depend only on the encoder
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
        t, s_len = q.size(2), k.size(2)
        if is_causal and t == 1:  # one query at the newest position sees every key (a plain bool, even
            is_causal = False  # when torch.compile makes t symbolic: SDPA takes no symbolic is_causal)
        if is_causal and (mask is not None or t != s_len):
            # Query i sits at absolute position i + (S - T) when a cache holds S - T past keys.
            causal = torch.ones(t, s_len, dtype=torch.bool, device=q.device).tril(diagonal=s_len - t)
            mask = causal if mask is None else mask & causal
            is_causal = False
        dropout_p = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
            if is_causal:
                scores = scores.masked_fill(~causal_mask(t, q.device), float("-inf"))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, dropout_p, self.training) @ v  # (B, H, T, Dh)
        else:
            weights = None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
            )
        out = out.transpose(1, 2).reshape(x.size(0), x.size(1), -1)  # (B, T, D)
        return self.out_proj(out), weights


class FeedForward(nn.Module):
    """Position-wise MLP: D -> d_ff -> D with (exact) GELU.

    No dropout inside: as in the 2017 paper and GPT-2, dropout acts on the sub-layer's
    output (``_Residual``); one more inside slowed early learning (``tools.learning``).
    """

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Residual(nn.Module):
    """One residual sub-layer around ``fn``: pre-LN ``x + f(LN(x))`` or post-LN ``LN(x + f(x))``.

    Pre-LN keeps gradients well scaled without warmup tricks, which matters when
    students train from scratch; post-LN is the 2017 original, kept for comparison.
    """

    def __init__(self, d_model: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: torch.Tensor, fn) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weights = fn(self.norm(x) if self.norm_first else x)
        x = x + self.dropout(out)
        return (x if self.norm_first else self.norm(x)), weights


class EncoderLayer(nn.Module):
    """Bidirectional self-attention, then the FFN."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff)
        self.attn_block = _Residual(d_model, dropout, norm_first)
        self.ffn_block = _Residual(d_model, dropout, norm_first)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, S, D), mask (B, 1, 1, S) -> (B, S, D) and self-attention weights (B, H, S, S)."""
        x, weights = self.attn_block(x, lambda h: self.self_attn(h, mask=mask, need_weights=need_weights))
        x, _ = self.ffn_block(x, lambda h: (self.ffn(h), None))
        return x, weights


class DecoderLayer(nn.Module):
    """Causal self-attention, optional cross-attention to the encoder, then the FFN.

    With ``cross_attention=False`` this is a GPT block: the decoder-only model is
    literally the encoder-decoder's decoder with the middle sub-layer removed.
    """

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool, cross_attention: bool
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.self_block = _Residual(d_model, dropout, norm_first)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout) if cross_attention else None
        self.cross_block = _Residual(d_model, dropout, norm_first) if cross_attention else None
        self.ffn = FeedForward(d_model, d_ff)
        self.ffn_block = _Residual(d_model, dropout, norm_first)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        cache: dict[str, KVCache] | None = None,
        self_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, T, D), memory (B, S, D) -> (B, T, D), self weights (B, H, T, T'), cross weights (B, H, T, S).

        Right padding needs no self-attention mask: under the causal mask a real
        token only sees earlier positions, which are never padding. ``self_mask`` (bool, broadcastable
        to (B, H, T, T'), True = may attend) replaces the causal mask: a prefix LM's (``prefix_lm_mask``).
        """
        self_cache = cache.setdefault("self", {}) if cache is not None else None
        causal = self_mask is None
        x, self_w = self.self_block(
            x,
            lambda h: self.self_attn(
                h, mask=self_mask, is_causal=causal, need_weights=need_weights, cache=self_cache
            ),
        )
        cross_w = None
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this decoder layer has cross-attention: pass the encoder output as memory")
            cross_cache = cache.setdefault("cross", {}) if cache is not None else None
            x, cross_w = self.cross_block(
                x,
                lambda h: self.cross_attn(
                    h, memory=memory, mask=memory_mask, need_weights=need_weights, cache=cross_cache
                ),
            )
        x, _ = self.ffn_block(x, lambda h: (self.ffn(h), None))
        return x, self_w, cross_w
