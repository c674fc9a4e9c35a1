"""Extraction: run a model on examples and keep every attention map as an ``AttentionRecord``.

Convention everywhere in this package: **rows are queries, columns are keys**. A matrix ``A`` of one
head has ``A[i, j]`` = how much query position ``i`` reads key position ``j``, and each row sums to 1.
Three kinds exist: ``encoder`` (source reads source), ``decoder`` (causal; the decoder reads its own
inputs) and ``cross`` (rows are target positions, columns source tokens). The decoder-only model has
only ``decoder``.

``extract_attention`` gives one example's ``AttentionRecord``, padding cut away and tokens labelled;
``forward_batch`` runs many examples as one padded batch, for statistics over a dataset that never
need the per-example records.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.batching import pad_batch
from ..model.transformer import ReferenceTransformer

KINDS = ("encoder", "decoder", "cross")
# Which token sequence labels the rows / columns of each kind, and the model output that holds it.
_AXES = {"encoder": ("source", "source"), "decoder": ("decoder", "decoder"), "cross": ("decoder", "source")}
_OUTPUT_KEYS = {"encoder": "encoder_attentions", "decoder": "decoder_attentions", "cross": "cross_attentions"}


@dataclass
class AttentionRecord:
    """The attention of one example, padding removed, as numpy arrays.

    ``attentions[kind]`` has shape (layers, heads, T_query, T_key); every row sums to 1:

    * ``encoder``: rows and columns are the source tokens;
    * ``decoder``: rows and columns are the decoder *inputs*: ``[BOS] + target[:-1]`` for the
      encoder-decoder (row i predicts ``target[i]``), the ids themselves for the decoder-only
      model. Causal: row i only sees columns 0..i;
    * ``cross``: rows are the decoder inputs (target positions), columns the source tokens.

    Token ids are kept next to their labels so statistics (e.g. the mass on chosen source tokens)
    can be computed later without the model.
    """

    attentions: dict[str, np.ndarray]
    decoder_ids: list[int]
    decoder_tokens: list[str]
    source_ids: list[int] | None = None
    source_tokens: list[str] | None = None
    target_ids: list[int] | None = None  # what the decoder predicts (encoder-decoder only)

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if k in self.attentions]

    def attention(self, kind: str) -> np.ndarray:
        """All layers and heads of one kind, (layers, heads, T_query, T_key)."""
        if kind not in self.attentions:
            raise ValueError(f"this record has no {kind!r} attention; allowed values: {self.kinds}")
        return self.attentions[kind]

    def query_labels(self, kind: str) -> list[str]:
        """Labels of the rows of ``attentions[kind]``."""
        self.attention(kind)
        return self.source_tokens if _AXES[kind][0] == "source" else self.decoder_tokens

    def key_labels(self, kind: str) -> list[str]:
        """Labels of the columns of ``attentions[kind]``."""
        self.attention(kind)
        return self.source_tokens if _AXES[kind][1] == "source" else self.decoder_tokens

    def matrix(self, kind: str, layer: int, head: int | None = None) -> np.ndarray:
        """One (T_query, T_key) matrix; ``head=None`` averages the heads (rows still sum to 1)."""
        att = self.attention(kind)  # (L, H, Tq, Tk)
        if not 0 <= layer < att.shape[0]:
            raise ValueError(f"layer {layer} out of range: the model has {att.shape[0]} layer(s)")
        if head is None:
            return att[layer].mean(axis=0)
        if not 0 <= head < att.shape[1]:
            raise ValueError(f"head {head} out of range: the model has {att.shape[1]} head(s)")
        return att[layer, head]


def token_labels(ids: Sequence[int], tokenizer) -> list[str]:
    """Readable label of each token: decoded alone, spaces as ``▁``, newlines as ``\\n``.

    Decoding token by token (not the raw BPE strings with ``Ġ``/``Ċ``) shows students the text a
    token stands for; a token holding half of a multi-byte character shows ``�``.
    """
    escapes = str.maketrans({" ": "▁", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
    return [tokenizer.decode([int(i)]).translate(escapes) for i in ids]


def as_ids(x) -> list[int]:
    """A 1-D id list from a list, array, tensor, (1, L) tensor or dataset row; padding left in."""
    if isinstance(x, Mapping):
        x = x["input_ids"]
    return np.asarray(x, dtype=np.int64).reshape(-1).tolist()


def _strip_pad(ids: list[int], pad: int) -> list[int]:
    end = len(ids)
    while end and ids[end - 1] == pad:
        end -= 1
    if not end:
        raise ValueError("example is empty (only padding)")
    return ids[:end]


def split_example(model: nn.Module, example) -> tuple[list[int] | None, list[int]]:
    """One example -> (source ids or None, target ids / decoder-only ids), trailing padding removed.

    Accepts a packed row ``source + [SEP] + target`` (list, tensor, or dataset row with
    ``input_ids``), or a ``(source, target)`` pair for the encoder-decoder.
    """
    pad = model.config.pad_token_id
    encdec = isinstance(model, ReferenceTransformer)
    if isinstance(example, tuple) and len(example) == 2 and not np.isscalar(example[0]):
        if not encdec:
            raise ValueError(
                "a (source, target) pair needs an encoder-decoder; give the decoder-only model one id list"
            )
        src, tgt = (_strip_pad(as_ids(part), pad) for part in example)
    else:
        ids = _strip_pad(as_ids(example), pad)
        if not encdec:
            return None, ids
        src, tgt = model.split_packed_row(ids)
    if not src or not tgt:
        raise ValueError(
            f"need a non-empty source and target, got {len(src)} source and {len(tgt)} target tokens"
        )
    return src, tgt


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate without dropout, then give the model back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


@dataclass
class AttentionBatch:
    """A batched forward pass: zero-padded attention per kind plus each row's true lengths."""

    attentions: dict[str, torch.Tensor]  # kind -> (B, L, H, Tq, Tk)
    lengths: dict[str, tuple[torch.Tensor, torch.Tensor]]  # kind -> (query lengths (B,), key lengths (B,))
    source_ids: list[list[int]] | None
    target_ids: list[list[int]] | None
    decoder_ids: list[list[int]]  # what the decoder read


def forward_batch(model: nn.Module, examples: Sequence) -> AttentionBatch:
    """Run ``examples`` (anything ``extract_attention`` accepts) as one padded batch.

    One forward pass for many examples is what makes statistics over a dataset affordable; the
    padded rows and columns are zeros, and ``lengths`` says where each example's attention ends.
    """
    pad = model.config.pad_token_id
    src, tgt = zip(*(split_example(model, ex) for ex in examples))
    src, tgt = list(src), list(tgt)
    t_len = torch.tensor([len(t) for t in tgt])
    with _eval_mode(model):
        if isinstance(model, ReferenceTransformer):
            tgt_ids = pad_batch(tgt, pad)  # (B, T)
            out = model(src_ids=pad_batch(src, pad), tgt_ids=tgt_ids, return_attention=True)
            dec = [row[: len(t)] for row, t in zip(model.shift_right(tgt_ids).tolist(), tgt)]
            s_len = torch.tensor([len(s) for s in src])
            lengths = {"encoder": (s_len, s_len), "decoder": (t_len, t_len), "cross": (t_len, s_len)}
        else:
            src, dec, tgt = None, tgt, None
            out = {"decoder_attentions": model(pad_batch(dec, pad), return_attention=True)["attentions"]}
            lengths = {"decoder": (t_len, t_len)}
    attentions = {k: torch.stack(out[_OUTPUT_KEYS[k]], dim=1).float() for k in lengths}  # (B, L, H, Tq, Tk)
    return AttentionBatch(attentions, lengths, src, tgt, dec)


def extract_attention(model: nn.Module, example, tokenizer) -> AttentionRecord:
    """Attention of every layer and head for ONE example, padding removed.

    ``example`` is a packed row ``source + [SEP] + target`` (list, 1-D or (1, L) tensor, or a
    dataset row with ``input_ids``), a ``(source_ids, target_ids)`` pair, or for the decoder-only
    model a plain id sequence. Trailing padding is ignored. See ``AttentionRecord`` for what the
    rows and columns of each kind are.
    """
    batch = forward_batch(model, [example])
    src = None if batch.source_ids is None else batch.source_ids[0]
    return AttentionRecord(
        attentions={k: att[0].numpy().copy() for k, att in batch.attentions.items()},  # (L, H, Tq, Tk)
        decoder_ids=batch.decoder_ids[0],
        decoder_tokens=token_labels(batch.decoder_ids[0], tokenizer),
        source_ids=src,
        source_tokens=None if src is None else token_labels(src, tokenizer),
        target_ids=None if batch.target_ids is None else batch.target_ids[0],
    )
