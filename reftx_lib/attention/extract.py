"""A model's attention maps: ``extract_attention`` for one example, ``forward_batch`` for a padded batch.
Rows are queries, columns are keys: ``A[i, j]`` is how much query ``i`` reads key ``j``; rows sum to 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.batching import pad_batch
from ..model.transformer import ReferenceTransformer

KINDS = ("encoder", "decoder", "cross")
_OUTPUT_KEYS = {"encoder": "encoder_attentions", "decoder": "decoder_attentions", "cross": "cross_attentions"}


@dataclass
class AttentionRecord:
    """One example's unpadded attention, ``attentions[kind]`` (layers, heads, T_query, T_key); ids kept so
    statistics need no model. Decoder inputs are ``[BOS] + target[:-1]`` for the encoder-decoder."""

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
        return self.source_tokens if kind == "encoder" else self.decoder_tokens

    def key_labels(self, kind: str) -> list[str]:
        """Labels of the columns of ``attentions[kind]``."""
        self.attention(kind)
        return self.decoder_tokens if kind == "decoder" else self.source_tokens

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
    """Each token decoded alone (spaces ``▁``, newlines ``\\n``): the text it stands for, not BPE's ``Ġ``."""
    escapes = str.maketrans({" ": "▁", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
    return [tokenizer.decode([int(i)]).translate(escapes) for i in ids]


def as_ids(x) -> list[int]:
    """A 1-D id list from a list, array, tensor, (1, L) tensor or dataset row; padding left in."""
    if isinstance(x, Mapping):
        x = x["input_ids"]
    return np.asarray(x, dtype=np.int64).reshape(-1).tolist()


def _strip_pad(ids: list[int], pad: int) -> list[int]:
    end = next((k for k in range(len(ids), 0, -1) if ids[k - 1] != pad), 0)
    if not end:
        raise ValueError("example is empty (only padding)")
    return ids[:end]


def split_example(model: nn.Module, example) -> tuple[list[int] | None, list[int]]:
    """One example (packed row or ``(source, target)`` pair) -> (source ids or None, target ids), unpadded."""
    pad = model.config.pad_token_id
    encdec = isinstance(model, ReferenceTransformer)
    if isinstance(example, tuple) and len(example) == 2 and not np.isscalar(example[0]):
        if not encdec:
            fix = "give the decoder-only model one id list"
            raise ValueError(f"a (source, target) pair needs an encoder-decoder; {fix}")
        src, tgt = (_strip_pad(as_ids(part), pad) for part in example)
    else:
        ids = _strip_pad(as_ids(example), pad)
        if not encdec:
            return None, ids
        src, tgt = model.split_packed_row(ids)
    if not src or not tgt:
        got = f"{len(src)} source and {len(tgt)} target tokens"
        raise ValueError(f"need a non-empty source and target, got {got}")
    return src, tgt


@dataclass
class AttentionBatch:
    """A batched forward pass: zero-padded attention per kind plus each row's true lengths."""

    attentions: dict[str, torch.Tensor]  # kind -> (B, L, H, Tq, Tk)
    lengths: dict[str, tuple[torch.Tensor, torch.Tensor]]  # kind -> (query lengths (B,), key lengths (B,))
    source_ids: list[list[int]] | None
    target_ids: list[list[int]] | None
    decoder_ids: list[list[int]]  # what the decoder read


def forward_batch(model: nn.Module, examples: Sequence) -> AttentionBatch:
    """Run ``examples`` as one padded batch: affordable statistics over a dataset (padding is zeros)."""
    pad = model.config.pad_token_id
    src, tgt = map(list, zip(*(split_example(model, ex) for ex in examples)))
    t_len = torch.tensor([len(t) for t in tgt])
    was_training = model.training
    model.eval()  # no dropout; the model goes back in the mode it came in
    try:
        with torch.inference_mode():
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
    finally:
        model.train(was_training)
    attentions = {k: torch.stack(out[_OUTPUT_KEYS[k]], dim=1).float() for k in lengths}  # (B, L, H, Tq, Tk)
    return AttentionBatch(attentions, lengths, src, tgt, dec)


def extract_attention(model: nn.Module, example, tokenizer) -> AttentionRecord:
    """Every layer and head's attention for ONE example (packed row, pair or id list), labelled, to plot."""
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
