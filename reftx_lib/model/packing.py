"""The packed ``source [SEP] target`` row: how an encoder-decoder reads one sequence in two parts.

Every corpus row is one token list. A decoder-only model reads it whole; an
encoder-decoder reads the part before the first SEP with its encoder and predicts
the part after it with its decoder, which is fed the target shifted right by one
([BOS] + target[:-1]). This module is the only place that knows the layout;
``ReferenceTransformer`` and the benchmarks call it.
"""

from __future__ import annotations

import torch

from ..constants import IGNORE_INDEX


def split_packed(
    input_ids: torch.Tensor, sep_id: int, pad_id: int, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Split right-padded packed rows (B, L) at the first SEP into source (B, S) and target (B, T), re-padded.

    ``labels`` (B, L), if given, is split like the target and padded with ``IGNORE_INDEX``.
    """
    is_sep = input_ids == sep_id
    missing = (~is_sep.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(
            f"packed input rows {missing[:10]} have no SEP token (id {sep_id}); "
            "pack each row as source + [SEP] + target, or pass src_ids= / tgt_ids="
        )
    sep_pos = is_sep.int().argmax(dim=1)  # (B,) first SEP
    src_len = sep_pos
    tgt_len = (input_ids != pad_id).sum(dim=1) - sep_pos - 1
    if int(src_len.min()) == 0 or int(tgt_len.min()) <= 0:
        raise ValueError(
            "every packed row needs a non-empty source before SEP and a non-empty target after it"
        )
    b, length = input_ids.shape
    s_max, t_max = int(src_len.max()), int(tgt_len.max())

    def gather(x, start, n, lens, fill):
        pos = start[:, None] + torch.arange(n, device=x.device)  # (B, n)
        out = x.gather(1, pos.clamp(max=length - 1))
        return out.masked_fill(torch.arange(n, device=x.device) >= lens[:, None], fill)

    zero = torch.zeros_like(sep_pos)
    src = gather(input_ids, zero, s_max, src_len, pad_id)  # (B, S)
    tgt = gather(input_ids, sep_pos + 1, t_max, tgt_len, pad_id)  # (B, T)
    tgt_labels = None if labels is None else gather(labels, sep_pos + 1, t_max, tgt_len, IGNORE_INDEX)
    return src, tgt, tgt_labels


def shift_right(tgt_ids: torch.Tensor, bos_id: int) -> torch.Tensor:
    """[BOS] + target[:-1] (B, T): the decoder's input for teacher forcing."""
    bos = torch.full_like(tgt_ids[:, :1], bos_id)
    return torch.cat([bos, tgt_ids[:, :-1]], dim=1)


def counted_targets(ids: torch.Tensor, sep_id: int, pad_id: int) -> int:
    """Target tokens (after each row's first SEP) in right-padded packed rows (B, L): what the loss counts."""
    real = int((ids != pad_id).sum())
    sep = (ids == sep_id).int().argmax(dim=1)  # (B,) first SEP
    return real - int((sep + 1).sum())


def split_packed_row(row: list[int], sep_id: int) -> tuple[list[int], list[int]]:
    """One packed row (a token list, no padding) -> (source, target): the tokens before and after its
    first SEP."""
    if sep_id not in row:
        raise ValueError(
            f"packed row has no SEP token (id {sep_id}); pack each row as source + [SEP] + target, "
            "or pass a (source, target) pair"
        )
    cut = row.index(sep_id)
    return row[:cut], row[cut + 1 :]
