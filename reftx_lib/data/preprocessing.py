"""Token datasets; each encoder returns ``(dataset, stats)`` so notebooks show what a format supervises."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict

from ..constants import BOS_ID, EOS_ID, SEP_ID

logger = logging.getLogger("reftx")

Data = TypeVar("Data", Dataset, DatasetDict)
Stats = dict[str, float | int]
Encoded = tuple[Data, Stats | dict[str, Stats]]  # per-split stats for a DatasetDict


def tokenize(tokenizer, texts: list[str]) -> list[list[int]]:
    """Batched tokenization without special tokens: each layout adds its own ``<bos>``/``<sep>``/``<eos>``."""
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def chunk_document(ids: list[int], max_tokens: int) -> list[list[int]]:
    """Balanced windows of at most ``max_tokens``: no text lost, no tiny tail (520, max 510 -> 260 + 260)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    n = len(ids)
    k = -(-n // max_tokens)  # ceil division
    bounds = [round(i * n / k) for i in range(k + 1)] if k else [0]
    return [ids[a:b] for a, b in zip(bounds, bounds[1:])]


def midpoint_split(ids: list[int], sep_id: int = SEP_ID, eos_id: int = EOS_ID) -> list[int]:
    """``source + [SEP] + target + [EOS]`` split at the middle: both architectures get identical targets."""
    if len(ids) < 2:
        raise ValueError(f"midpoint_split needs a document of at least 2 tokens, got {len(ids)}")
    half = len(ids) // 2
    return ids[:half] + [sep_id] + ids[half:] + [eos_id]


def _per_split(encode: Callable[..., tuple[Dataset, Stats]]) -> Callable[..., Encoded]:
    """Let an encoder of one ``Dataset`` take a ``DatasetDict`` too, encoding each split (stats per split)."""

    @functools.wraps(encode)
    def per_split(ds, *args, **kwargs):
        if isinstance(ds, DatasetDict):
            results = {split: encode(part, *args, **kwargs) for split, part in ds.items()}
            return DatasetDict({s: r[0] for s, r in results.items()}), {s: r[1] for s, r in results.items()}
        return encode(ds, *args, **kwargs)

    return per_split


def _row_lengths(ds: Dataset, column: str = "input_ids") -> np.ndarray:
    table = ds.with_format("arrow")[:]
    return pc.list_value_length(table[column]).to_numpy(zero_copy_only=False).astype(np.int64)


def _chunks(ds: Dataset, tokenizer, max_doc_tokens: int, min_doc_tokens: int) -> tuple[Dataset, Stats]:
    """Tokenize ``text``, chunk every document and drop (and count) short chunks."""
    if min_doc_tokens < 2:
        raise ValueError(f"min_doc_tokens must be >= 2 so every chunk can be split, got {min_doc_tokens}")

    def explode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenize(tokenizer, batch["text"])
        doc_ids, chunks = [], []
        for doc_id, ids in zip(batch["id"], encoded):
            for chunk in chunk_document(ids, max_doc_tokens):
                doc_ids.append(doc_id)
                chunks.append(chunk)
        return {"doc_id": doc_ids, "chunk": chunks}

    all_chunks = ds.map(explode, batched=True, remove_columns=ds.column_names)
    lengths = _row_lengths(all_chunks, "chunk")
    kept = all_chunks.filter(lambda b: [len(c) >= min_doc_tokens for c in b["chunk"]], batched=True)
    dropped = len(all_chunks) - len(kept)
    dropped_tokens = int(lengths[lengths < min_doc_tokens].sum())
    if dropped:
        message = "dropped %d of %d chunk(s) shorter than %d tokens (%d tokens)"
        logger.info(message, dropped, len(all_chunks), min_doc_tokens, dropped_tokens)
    stats = {"documents": len(ds), "chunks": len(kept), "dropped_short": dropped}
    return kept, stats | {"dropped_short_tokens": dropped_tokens}


def _finish_stats(out: Dataset, stats: Stats, supervised: np.ndarray) -> Stats:
    inputs, supervised_tokens = int(_row_lengths(out).sum()), int(supervised.sum())
    share = supervised_tokens / inputs if inputs else 0.0
    return stats | dict(input_tokens=inputs, supervised_tokens=supervised_tokens, token_utilization=share)


def _halves(ds: Dataset, tokenizer, max_doc_tokens: int, min_doc_tokens: int, layout, all_supervised: bool):
    """Each chunk as one row with the same ``source_len``/``target_len`` in every layout: losses compare."""
    chunks, stats = _chunks(ds, tokenizer, max_doc_tokens, min_doc_tokens)

    def rows(batch: dict[str, list]) -> dict[str, list]:
        halves = [len(c) // 2 for c in batch["chunk"]]
        targets = [len(c) - h + 1 for c, h in zip(batch["chunk"], halves)]  # second half + eos
        return {"input_ids": [layout(c) for c in batch["chunk"]], "source_len": halves, "target_len": targets}

    out = chunks.map(rows, batched=True, remove_columns=["chunk"])
    supervised = _row_lengths(out) - 1 if all_supervised else np.asarray(out["target_len"][:], dtype=np.int64)
    return out, _finish_stats(out, stats, supervised)


@_per_split
def encode_midpoint(
    ds: Data, tokenizer, max_doc_tokens: int = 510, min_doc_tokens: int = 16, bos: bool = False
) -> Encoded:
    """Rows ``source <sep> target <eos>``; ``bos=True`` gives the prefix LM a first input to predict from."""
    layout = lambda c: [BOS_ID] * bos + midpoint_split(c)  # noqa: E731
    return _halves(ds, tokenizer, max_doc_tokens, min_doc_tokens, layout, all_supervised=False)


@_per_split
def encode_documents(ds: Data, tokenizer, max_doc_tokens: int = 510, min_doc_tokens: int = 16) -> Encoded:
    """``<bos> chunk <eos>`` rows of ``encode_midpoint``'s chunks, all supervised: perplexity compares."""
    layout = lambda c: [BOS_ID] + c + [EOS_ID]  # noqa: E731
    return _halves(ds, tokenizer, max_doc_tokens, min_doc_tokens, layout, all_supervised=True)


@_per_split
def encode_blocks(ds: Data, tokenizer, block_size: int) -> Encoded:
    """Pack ``<bos> doc <eos>`` of the split, in order, into rows of ``block_size``: no compute on padding."""
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2 (an input and a next token), got {block_size}")
    docs = ds.map(
        lambda batch: {"ids": [[BOS_ID] + ids + [EOS_ID] for ids in tokenize(tokenizer, batch["text"])]},
        batched=True,
        remove_columns=ds.column_names,
    )
    stream = pc.list_flatten(docs.with_format("arrow")[:]["ids"]).to_numpy(zero_copy_only=False)  # (N,)
    n, n_blocks = len(stream), len(stream) // block_size
    kept = n_blocks * block_size
    blocks = stream[:kept].reshape(n_blocks, block_size)  # (n_blocks, block_size)
    out = Dataset.from_dict({"input_ids": blocks.astype(np.int32).tolist()})
    if n - kept:
        logger.info("encode_blocks: dropped the final partial block of %d token(s)", n - kept)
    stats = {"documents": len(ds), "blocks": n_blocks, "input_tokens": int(n), "kept_tokens": kept}
    return out, stats | {"dropped_tail_tokens": int(n - kept), "token_utilization": kept / n if n else 0.0}


@_per_split
def encode_samsum(ds: Data, tokenizer, max_source_len: int = 512, max_target_len: int = 128) -> Encoded:
    """SAMSum as ``dialogue <sep> summary <eos>`` rows, truncation counted; text columns stay for ROUGE."""

    def rows(batch: dict[str, list]) -> dict[str, list]:
        dialogues, summaries = tokenize(tokenizer, batch["dialogue"]), tokenize(tokenizer, batch["summary"])
        src = [d[:max_source_len] for d in dialogues]
        tgt = [s[: max_target_len - 1] for s in summaries]
        return {
            "input_ids": [s + [SEP_ID] + t + [EOS_ID] for s, t in zip(src, tgt)],
            "source_len": [len(s) for s in src],
            "target_len": [len(t) + 1 for t in tgt],
            "_source_cut": [len(d) > max_source_len for d in dialogues],
            "_target_cut": [len(s) > max_target_len - 1 for s in summaries],
        }

    out = ds.map(rows, batched=True)
    source_cut, target_cut = (int(np.sum(out[c][:])) for c in ("_source_cut", "_target_cut"))
    if source_cut or target_cut:
        message = "encode_samsum: truncated %d dialogue(s) and %d summary(ies) of %d"
        logger.info(message, source_cut, target_cut, len(out))
    out = out.remove_columns(["_source_cut", "_target_cut"])
    stats = {"documents": len(out), "source_truncated": source_cut, "target_truncated": target_cut}
    return out, _finish_stats(out, stats, np.asarray(out["target_len"][:], dtype=np.int64))
