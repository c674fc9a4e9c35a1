"""Padding and token-budget batching: with lengths from 10 to 1000+ tokens (SAMSum), a token budget over
rows of similar length keeps batch memory even and padding low, where fixed row counts would not."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from ..constants import PAD_ID


def pad_batch(seqs: list[list[int]], pad_id: int = PAD_ID) -> torch.LongTensor:
    """Right-pad ``seqs`` into one (B, T_max) LongTensor: position 0 stays the first real token, as
    causal masks and learned position embeddings expect."""
    if not seqs:
        raise ValueError("pad_batch got an empty list of sequences; pass at least one")
    rows = [torch.as_tensor(seq, dtype=torch.long) for seq in seqs]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id)  # (B, T_max)


Length = int | tuple[int, int]  # a row's tokens, or an encoder-decoder row's (source, target) tokens


def _pack(order: list[int], lengths: Sequence[tuple[int, ...]], max_tokens: int) -> list[list[int]]:
    """Cut ``order`` greedily into batches of at most ``max_tokens`` computed: rows x the parts' longest."""
    batches, current, longest = [], [], ()
    for idx in order:
        new_longest = tuple(map(max, longest or lengths[idx], lengths[idx]))
        if current and (len(current) + 1) * sum(new_longest) > max_tokens:
            batches.append(current)
            current, new_longest = [], lengths[idx]
        current.append(idx)
        longest = new_longest
    return batches + [current] if current else batches


def token_budget_batches(
    lengths: Sequence[Length], max_tokens: int, shuffle: bool, seed: int, pool_size: int = 1024
) -> list[list[int]]:
    """Batches of example indices with ``len(batch) * max_len(batch) <= max_tokens`` (a hard memory limit),
    sorted by length (evaluation) or bucketed in shuffled pools (training). (source, target) pairs cost
    rows x (longest source + longest target), as an encoder-decoder pads them apart, and sort by source in
    steps of 16, then target: by their sum, 14% of SAMSum's computed tokens were padding."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    parts = [n if isinstance(n, tuple) else (n,) for n in lengths]
    too_long = [i for i, n in enumerate(parts) if sum(n) > max_tokens]
    if too_long:
        raise ValueError(
            f"{len(too_long)} example(s) are longer than max_tokens={max_tokens} "
            f"(longest {max(sum(parts[i]) for i in too_long)} tokens, e.g. index {too_long[0]}); "
            "raise max_tokens or truncate those examples."
        )
    pairs = bool(parts) and len(parts[0]) == 2
    by_length = (lambda i: (parts[i][0] // 16, parts[i][1])) if pairs else (lambda i: parts[i])
    if not shuffle:
        return _pack(sorted(range(len(parts)), key=by_length), parts, max_tokens)
    rng = random.Random(seed)
    order = list(range(len(parts)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_size):
        batches += _pack(sorted(order[start : start + pool_size], key=by_length), parts, max_tokens)
    rng.shuffle(batches)
    return batches
