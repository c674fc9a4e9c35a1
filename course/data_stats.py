"""How much data the course has and how well it is batched: the numbers notebooks and runs print.

``corpus_stats`` and ``token_lengths`` size the corpora (model and batch sizes should follow from how
much text there is), ``tokenizer_info`` names the exact tokenizer a checkpoint was trained with, and
``padding_waste`` says how well a batching suits a dataset's lengths.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerFast

from reftx_lib.data.preprocessing import tokenize
from reftx_lib.data.tokenizer import INFO_FILE


def _summary(values: np.ndarray, prefix: str) -> dict[str, float | int]:
    return {
        f"{prefix}_total": int(values.sum()),
        f"{prefix}_mean": float(values.mean()) if len(values) else 0.0,
        f"{prefix}_median": float(np.median(values)) if len(values) else 0.0,
        f"{prefix}_max": int(values.max()) if len(values) else 0,
    }


def token_lengths(ds: Dataset, tokenizer, field: str = "text") -> np.ndarray:
    """Tokens per document of ``ds[field]``, through a cached ``map`` (histograms and statistics share it)."""
    counts = ds.map(
        lambda batch: {"n_tokens": [len(ids) for ids in tokenize(tokenizer, batch[field])]},
        batched=True,
        remove_columns=ds.column_names,
    )
    return np.asarray(counts["n_tokens"][:], dtype=np.int64)


def corpus_stats(
    dsd: DatasetDict, tokenizer=None, text_fields: Sequence[str] | None = None
) -> dict[str, dict[str, float | int]]:
    """Return per-split sizes: documents, characters and (with a tokenizer) tokens.

    Model and batch sizes should follow from how much text there is, so notebooks print these
    numbers before training. ``text_fields`` defaults to ``("text",)`` or, for SAMSum,
    ``("dialogue", "summary")``; each field gets its own ``<field>_chars_*`` and ``<field>_tokens_*``
    entries (total, mean, median, max per document).
    """
    stats: dict[str, dict[str, float | int]] = {}
    for split, ds in dsd.items():
        fields = text_fields or (("text",) if "text" in ds.column_names else ("dialogue", "summary"))
        row: dict[str, float | int] = {"documents": len(ds)}
        for field in fields:
            texts = ds[field][:]
            row |= _summary(np.array([len(t) for t in texts], dtype=np.int64), f"{field}_chars")
            if tokenizer is not None:
                row |= _summary(token_lengths(ds, tokenizer, field), f"{field}_tokens")
        stats[split] = row
    return stats


def tokenizer_info(tok: PreTrainedTokenizerFast) -> dict[str, object]:
    """Describe a tokenizer for checkpoints: vocab size, cache path, key, training time.

    A checkpoint that stores this can name the exact tokenizer it was trained with. Tokenizers not
    loaded through ``load_tokenizer`` have ``None`` for path, key and time.
    """
    info: dict[str, object] = {"vocab_size": len(tok), "path": None, "key": None, "train_seconds": None}
    info_file = Path(tok.name_or_path) / INFO_FILE if tok.name_or_path else None
    if info_file is not None and info_file.is_file():
        saved = json.loads(info_file.read_text())
        info |= {"path": str(info_file.parent), "key": saved["key"], "train_seconds": saved["train_seconds"]}
    return info


def padding_waste(batches: list[list[int]], lengths: Sequence[int]) -> float:
    """Return the fraction of padded positions that are padding (0 = no waste).

    Measures how well a batching strategy suits a dataset's length distribution.
    """
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return (padded - real) / padded if padded else 0.0
