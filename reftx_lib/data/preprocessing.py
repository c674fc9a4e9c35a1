"""Token-level datasets for the experiments, with statistics on what was kept.

Every encoder returns ``(dataset, stats)``: the dataset mirrors the input (a
``Dataset`` or a ``DatasetDict``) and ``stats`` is a plain dict of ints/floats (per
split for a ``DatasetDict``) so notebooks can print exactly how many tokens each
format supervises and how many were dropped.

Packed rows use ``<sep>`` between source and target; models split rows at the first
``<sep>``. ``source_len`` / ``target_len`` columns say where the supervised part is.
"""

from __future__ import annotations

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


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Batched tokenization without special tokens (callers add them explicitly)."""
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def chunk_document(ids: list[int], max_tokens: int) -> list[list[int]]:
    """Cut ``ids`` into consecutive, non-overlapping windows of at most ``max_tokens``.

    Long documents are chunked rather than truncated so no text is lost: textbook
    sections run to thousands of tokens and truncation would throw most of them away.
    The windows are *balanced*: a document of n tokens gives k = ceil(n / max_tokens)
    windows whose sizes differ by at most one. So there is never a tiny left-over tail
    (520 tokens with max 510 gives 260 + 260, not 510 + 10) and nothing needs merging
    or dropping. ``sum(chunks, []) == ids`` always holds; an empty input gives ``[]``.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    n = len(ids)
    k = -(-n // max_tokens)  # ceil division
    bounds = [round(i * n / k) for i in range(k + 1)] if k else [0]
    return [ids[a:b] for a, b in zip(bounds, bounds[1:])]


def midpoint_split(ids: list[int], sep_id: int = SEP_ID, eos_id: int = EOS_ID) -> list[int]:
    """Return ``source + [SEP] + target + [EOS]`` with the split at ``len(ids) // 2``.

    This turns plain documents into a sequence-to-sequence task (continue the second
    half from the first), the seed experiment's way of comparing encoder-decoder and
    decoder-only models on identical targets. Odd lengths give the target the extra token.
    """
    if len(ids) < 2:
        raise ValueError(f"midpoint_split needs a document of at least 2 tokens, got {len(ids)}")
    half = len(ids) // 2
    return ids[:half] + [sep_id] + ids[half:] + [eos_id]


def _per_split(
    ds: Data, encode: Callable[[Dataset], tuple[Dataset, Stats]]
) -> tuple[Data, Stats | dict[str, Stats]]:
    """Apply ``encode`` to a Dataset, or to each split of a DatasetDict."""
    if isinstance(ds, DatasetDict):
        results = {split: encode(part) for split, part in ds.items()}
        return DatasetDict({s: r[0] for s, r in results.items()}), {s: r[1] for s, r in results.items()}
    return encode(ds)


def _row_lengths(ds: Dataset, column: str = "input_ids") -> np.ndarray:
    table = ds.with_format("arrow")[:]
    return pc.list_value_length(table[column]).to_numpy(zero_copy_only=False).astype(np.int64)


def _chunks(ds: Dataset, tokenizer, max_doc_tokens: int, min_doc_tokens: int) -> tuple[Dataset, Stats]:
    """Tokenize ``text``, chunk every document and drop (and count) short chunks."""
    if min_doc_tokens < 2:
        raise ValueError(f"min_doc_tokens must be >= 2 so every chunk can be split, got {min_doc_tokens}")

    def explode(batch: dict[str, list]) -> dict[str, list]:
        encoded = _encode(tokenizer, batch["text"])
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
        logger.info(
            "dropped %d of %d chunk(s) shorter than %d tokens (%d tokens)",
            dropped,
            len(all_chunks),
            min_doc_tokens,
            dropped_tokens,
        )
    return kept, {
        "documents": len(ds),
        "chunks": len(kept),
        "dropped_short": dropped,
        "dropped_short_tokens": dropped_tokens,
    }


def _finish_stats(out: Dataset, stats: Stats, supervised: np.ndarray) -> Stats:
    input_tokens = int(_row_lengths(out).sum())
    supervised_tokens = int(supervised.sum())
    return stats | {
        "input_tokens": input_tokens,
        "supervised_tokens": supervised_tokens,
        "token_utilization": supervised_tokens / input_tokens if input_tokens else 0.0,
    }


def encode_midpoint(
    ds: Data, tokenizer, max_doc_tokens: int = 510, min_doc_tokens: int = 16, bos: bool = False
) -> tuple[Data, Stats | dict[str, Stats]]:
    """Encode documents as midpoint-split rows ``source <sep> target <eos>``.

    ``bos=True`` starts every row with ``<bos>``: the prefix LM's reading of the same split (a
    decoder-only stack needs a first input to predict from; the encoder-decoder's decoder gets its
    ``<bos>`` from the shift instead). Source and target, and so the supervised tokens, do not change.
    Defaults give rows of at most 512 tokens (510 + sep + eos). Columns: ``input_ids``,
    ``source_len``, ``target_len`` (target tokens + eos, the supervised count) and
    ``doc_id``. Stats: documents, chunks, dropped_short, dropped_short_tokens, input_tokens,
    supervised_tokens, token_utilization.
    """

    def encode(part: Dataset) -> tuple[Dataset, Stats]:
        chunks, stats = _chunks(part, tokenizer, max_doc_tokens, min_doc_tokens)

        def split(batch: dict[str, list]) -> dict[str, list]:
            halves = [len(c) // 2 for c in batch["chunk"]]
            return {
                "input_ids": [[BOS_ID] * bos + midpoint_split(c) for c in batch["chunk"]],
                "source_len": halves,
                "target_len": [len(c) - h + 1 for c, h in zip(batch["chunk"], halves)],
            }

        out = chunks.map(split, batched=True, remove_columns=["chunk"])
        return out, _finish_stats(out, stats, np.asarray(out["target_len"][:], dtype=np.int64))

    return _per_split(ds, encode)


def encode_documents(
    ds: Data, tokenizer, max_doc_tokens: int = 510, min_doc_tokens: int = 16
) -> tuple[Data, Stats | dict[str, Stats]]:
    """Encode documents as decoder-only rows ``<bos> chunk <eos>``, one chunk per row.

    Uses exactly the chunks of ``encode_midpoint`` so the two formats can be compared:
    ``source_len = len(chunk) // 2`` and ``target_len`` (= ``len(chunk) - source_len + 1``)
    mark the second half plus eos, the very tokens the midpoint split supervises, so
    second-half perplexity is measured on identical targets. The stats count every
    predicted token (``len(chunk) + 1`` per row) as supervised, as a language model
    trains on all of them.
    """

    def encode(part: Dataset) -> tuple[Dataset, Stats]:
        chunks, stats = _chunks(part, tokenizer, max_doc_tokens, min_doc_tokens)

        def wrap(batch: dict[str, list]) -> dict[str, list]:
            halves = [len(c) // 2 for c in batch["chunk"]]
            return {
                "input_ids": [[BOS_ID] + c + [EOS_ID] for c in batch["chunk"]],
                "source_len": halves,
                "target_len": [len(c) - h + 1 for c, h in zip(batch["chunk"], halves)],
            }

        out = chunks.map(wrap, batched=True, remove_columns=["chunk"])
        return out, _finish_stats(out, stats, _row_lengths(out) - 1)

    return _per_split(ds, encode)


def encode_blocks(ds: Data, tokenizer, block_size: int) -> tuple[Data, Stats | dict[str, Stats]]:
    """Pack ``<bos> doc <eos>`` for all documents into rows of exactly ``block_size``.

    Packing wastes no compute on padding, the standard way to pre-train a decoder.
    The token stream is concatenated across the *whole* split (not per map batch), so
    only the final partial block is dropped; stats report its size in
    ``dropped_tail_tokens``. Documents keep their order; shuffle rows, not tokens.
    """
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2 (an input and a next token), got {block_size}")

    def encode(part: Dataset) -> tuple[Dataset, Stats]:
        docs = part.map(
            lambda batch: {"ids": [[BOS_ID] + ids + [EOS_ID] for ids in _encode(tokenizer, batch["text"])]},
            batched=True,
            remove_columns=part.column_names,
        )
        stream = pc.list_flatten(docs.with_format("arrow")[:]["ids"]).to_numpy(zero_copy_only=False)  # (N,)
        n_blocks = len(stream) // block_size
        blocks = stream[: n_blocks * block_size].reshape(n_blocks, block_size)  # (n_blocks, block_size)
        out = Dataset.from_dict({"input_ids": blocks.astype(np.int32).tolist()})
        dropped = len(stream) - n_blocks * block_size
        if dropped:
            logger.info("encode_blocks: dropped the final partial block of %d token(s)", dropped)
        return out, {
            "documents": len(part),
            "blocks": n_blocks,
            "input_tokens": int(len(stream)),
            "kept_tokens": n_blocks * block_size,
            "dropped_tail_tokens": int(dropped),
            "token_utilization": n_blocks * block_size / len(stream) if len(stream) else 0.0,
        }

    return _per_split(ds, encode)


def encode_samsum(
    ds: Data, tokenizer, max_source_len: int = 512, max_target_len: int = 128
) -> tuple[Data, Stats | dict[str, Stats]]:
    """Encode SAMSum as ``dialogue <sep> summary <eos>`` rows for summarization.

    Dialogues are truncated to ``max_source_len`` tokens and summaries to
    ``max_target_len - 1`` (eos included in the budget); truncation is counted, not
    hidden. ``id``, ``dialogue`` and ``summary`` stay for ROUGE against the full text.
    """

    def encode(part: Dataset) -> tuple[Dataset, Stats]:
        def rows(batch: dict[str, list]) -> dict[str, list]:
            dialogues = _encode(tokenizer, batch["dialogue"])
            summaries = _encode(tokenizer, batch["summary"])
            src = [d[:max_source_len] for d in dialogues]
            tgt = [s[: max_target_len - 1] for s in summaries]
            return {
                "input_ids": [s + [SEP_ID] + t + [EOS_ID] for s, t in zip(src, tgt)],
                "source_len": [len(s) for s in src],
                "target_len": [len(t) + 1 for t in tgt],
                "_source_cut": [len(d) > max_source_len for d in dialogues],
                "_target_cut": [len(s) > max_target_len - 1 for s in summaries],
            }

        out = part.map(rows, batched=True)
        source_cut = int(np.sum(out["_source_cut"][:]))
        target_cut = int(np.sum(out["_target_cut"][:]))
        if source_cut or target_cut:
            logger.info(
                "encode_samsum: truncated %d dialogue(s) and %d summary(ies) of %d",
                source_cut,
                target_cut,
                len(out),
            )
        out = out.remove_columns(["_source_cut", "_target_cut"])
        stats = {"documents": len(out), "source_truncated": source_cut, "target_truncated": target_cut}
        return out, _finish_stats(out, stats, np.asarray(out["target_len"][:], dtype=np.int64))

    return _per_split(ds, encode)
