"""The packed ``source [SEP] target`` row, and the checks a batch passes where it enters. A decoder-only
model reads a row whole; an encoder-decoder encodes the part before the first SEP and predicts the part
after it, fed [BOS] + target[:-1]; a prefix LM reads up to the first SEP both ways. ``check_batch`` runs
at the boundary (the trainer, on the host; ``generate``), never in a forward pass."""

from __future__ import annotations

import torch

from ..constants import IGNORE_INDEX


def split_packed(
    input_ids: torch.Tensor, sep_id: int, pad_id: int, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Split right-padded packed rows (B, L) at the first SEP into source (B, S) and target (B, T),
    re-padded; ``labels`` (B, L), if given, is split like the target and padded with ``IGNORE_INDEX``."""
    is_sep = input_ids == sep_id
    missing = (~is_sep.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        fix = "pack each row as source + [SEP] + target, or pass src_ids= / tgt_ids="
        raise ValueError(f"packed input rows {missing[:10]} have no SEP token (id {sep_id}); {fix}")
    src_len = is_sep.int().argmax(dim=1)  # (B,) first SEP
    tgt_len = (input_ids != pad_id).sum(dim=1) - src_len - 1
    if int(src_len.min()) == 0 or int(tgt_len.min()) <= 0:
        raise ValueError(
            "every packed row needs a non-empty source before SEP and a non-empty target after it"
        )

    def gather(x: torch.Tensor, start: torch.Tensor, lens: torch.Tensor, fill: int) -> torch.Tensor:
        steps = torch.arange(int(lens.max()), device=x.device)
        out = x.gather(1, (start[:, None] + steps).clamp(max=x.size(1) - 1))  # (B, n)
        return out.masked_fill(steps >= lens[:, None], fill)

    src = gather(input_ids, torch.zeros_like(src_len), src_len, pad_id)  # (B, S)
    tgt = gather(input_ids, src_len + 1, tgt_len, pad_id)  # (B, T)
    return src, tgt, None if labels is None else gather(labels, src_len + 1, tgt_len, IGNORE_INDEX)


def shift_right(tgt_ids: torch.Tensor, bos_id: int) -> torch.Tensor:
    """[BOS] + target[:-1] (B, T): the decoder's input for teacher forcing."""
    return torch.cat([torch.full_like(tgt_ids[:, :1], bos_id), tgt_ids[:, :-1]], dim=1)


def split_packed_row(row: list[int], sep_id: int) -> tuple[list[int], list[int]]:
    """One packed row (a token list, no padding) -> (source, target), the tokens around its first SEP."""
    if sep_id not in row:
        fix = "pack each row as source + [SEP] + target, or pass a (source, target) pair"
        raise ValueError(f"packed row has no SEP token (id {sep_id}); {fix}")
    cut = row.index(sep_id)
    return row[:cut], row[cut + 1 :]


def check_ids(ids: torch.Tensor, config, name: str = "input_ids", check_length: bool = True) -> None:
    """Bad ids give a message naming the field and the fix, not an index error deep in torch; a packed
    encoder-decoder row passes ``check_length=False``: its source and target are each held to ``max_len``."""
    problem = None
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        problem = f"must hold integer token ids (torch.long), got dtype {ids.dtype}; pass the tokenizer's ids"
    elif ids.dim() != 2:
        problem = f"must be a (batch, length) tensor of token ids, got shape {tuple(ids.shape)}"
    elif ids.numel() == 0:
        problem = f"is empty, shape {tuple(ids.shape)}: pass at least one row of at least one token"
    elif check_length and ids.size(1) > config.max_len:
        problem = (
            f"has length {ids.size(1)} > max_len={config.max_len}; "
            "truncate or chunk the input, or build the model with a larger max_len"
        )
    elif bool(((ids < 0) | (ids >= config.vocab_size)).any()):
        bad = int(ids[(ids < 0) | (ids >= config.vocab_size)][0])
        problem = (
            f"holds token id {bad} outside [0, vocab_size={config.vocab_size}); use the model's tokenizer"
        )
    if problem:
        raise ValueError(f"{name} {problem}")


def check_batch(model, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """Refuse rows (B, L) and labels ``model`` would misread (no scored label: a 0/0 = nan loss)."""
    c = model.config
    check_ids(input_ids, c, check_length=not model.is_encoder_decoder)
    scored = None if labels is None else labels[:, 1:]  # a decoder-only model predicts every next token
    if model.is_encoder_decoder:
        src, tgt, scored = split_packed(input_ids, c.sep_token_id, c.pad_token_id, labels)
        check_ids(src, c, "source (src_ids)")
        check_ids(tgt, c, "target (tgt_ids)")
    elif c.prefix_lm:
        missing = (~(input_ids == c.sep_token_id).any(dim=1)).nonzero().flatten().tolist()
        if missing:
            fix = "pack each row as [BOS] + source + [SEP] + target + [EOS] (layout 'prefix')"
            raise ValueError(f"prefix-LM rows {missing[:10]} have no SEP token (id {c.sep_token_id}); {fix}")
        prefix = (input_ids == c.sep_token_id).int().argmax(dim=1) + 1  # (B,): through the first SEP
        in_prefix = torch.arange(input_ids.size(1), device=input_ids.device) < prefix[:, None]  # (B, L)
        scored = None if labels is None else labels.masked_fill(in_prefix, IGNORE_INDEX)[:, 1:]
    if scored is None:
        return
    if scored.dtype == torch.bool or scored.is_floating_point() or scored.is_complex():
        raise ValueError(f"labels must hold integer token ids (torch.long), got dtype {scored.dtype}")
    bad = (scored != IGNORE_INDEX) & ((scored < 0) | (scored >= c.vocab_size))
    if bool(bad.any()):
        raise ValueError(
            f"labels hold {int(scored[bad][0])}, outside [0, vocab_size={c.vocab_size}) "
            f"and not {IGNORE_INDEX} (ignored); use the tokenizer the model was built for"
        )
    if not bool(((scored >= 0) & (scored != c.pad_token_id)).any()):
        raise ValueError(
            "every label is padding or -100, so no token would count and the loss would be nan; "
            "pass labels with at least one scored token (decoder-only rows need 2+ tokens)"
        )
