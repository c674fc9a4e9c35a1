"""Statistics of attention per layer and head, without any plotting or widget library.

* ``attention_stats`` / ``uniform_baseline`` summarise records per layer and head, and
  ``stats_over_dataset`` gives a tidy DataFrame over many examples;
* ``speaker_token_mask`` marks SAMSum's speaker names and ``speaker_mass`` measures the
  cross-attention mass on them;
* ``cross_profile`` says where in the source cross-attention lands and whether it depends
  on the target token.

Beyond torch, numpy and pandas it imports only ``extract`` and the byte-level BPE
alphabet of ``transformers`` (for the speaker mask). Rows are queries and columns keys,
as everywhere in this package (see ``extract``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ..model.transformer import BaseLanguageModel
from .extract import AttentionRecord, _as_ids, _forward, _split_example, extract_attention

STATS = ("entropy", "distance", "diagonal", "previous", "first", "monotonicity", "speaker_mass")
_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}  # byte-level BPE alphabet -> raw byte
_SPEAKER = re.compile(rb"(?m)^[ \t]*([^\r\n:]{1,40}):(?=[ \t\r\n]|$)")  # "Name:" at a line start


def _padded_stats(
    att: torch.Tensor,
    q_len: torch.Tensor,
    k_len: torch.Tensor,
    kind: str,
    key_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example statistics (B, L, H) of zero-padded ``kind`` attention ``att`` (B, L, H, T, S).

    Every statistic is a mean over the query rows that have a choice: rows beyond
    ``q_len`` are padding, and a row with a single visible key (the first row of causal
    attention, or a one-token source) is forced to weight 1 and is left out.

    * ``entropy``: row entropy / log(number of visible keys): 1 = uniform, 0 = one key.
      Row i of causal attention sees i + 1 keys, so it is normalised by log(i + 1).
    * ``distance``: expected |j - i * S / T| in key positions, i.e. the distance from the
      row's *aligned* key; for self-attention (S = T) that is the plain |j - i|.
    * ``diagonal`` / ``previous`` / ``first``: mass on the aligned key round(i * S / T)
      (= i for self-attention), on the key before it (rows whose aligned key is 0 are
      left out), and on key 0.
    * ``monotonicity`` (cross-attention only): Spearman correlation, over the rows of
      one example, between the target position and the position of its most attended
      source token. 1 = the argmax walks forward through the source; NaN when the
      argmax never moves (the correlation is undefined).
    * ``speaker_mass`` (only with ``key_mask`` (B, S) bool): mass on the masked keys.
    """
    b, n_layers, n_heads, t, s = att.shape
    causal = kind == "decoder"
    i = torch.arange(t)[None, :, None]  # (1, T, 1)
    j = torch.arange(s)[None, None, :]  # (1, 1, S)
    visible = j < k_len[:, None, None]  # (B, 1, S)
    if causal:
        visible = visible & (j <= i)  # (B, T, S)
    visible = visible.expand(b, t, s)
    n_keys = visible.sum(-1)  # (B, T)
    rows = (i[..., 0] < q_len[:, None]) & (n_keys > 1)  # (B, T) rows that have a choice
    p = att * visible[:, None, None]  # (B, L, H, T, S)

    def row_mean(x: torch.Tensor, valid: torch.Tensor = rows) -> torch.Tensor:
        """Mean of x (B, L, H, T) over the valid rows (B, T); NaN where no row is valid."""
        count = valid.sum(-1)[:, None, None]  # (B, 1, 1)
        total = (x * valid[:, None, None]).sum(-1)
        return torch.where(count > 0, total / count.clamp(min=1), torch.nan)

    log_n = torch.log(n_keys.clamp(min=2).float())[:, None, None]  # (B, 1, 1, T)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum(-1) / log_n  # (B, L, H, T)
    aligned = i[..., 0] * (k_len / q_len.clamp(min=1))[:, None]  # (B, T) fractional key position
    distance = (p * (j - aligned[..., None]).abs()[:, None, None]).sum(-1)
    aligned_idx = torch.minimum(aligned.round().long(), (k_len - 1)[:, None])  # (B, T)
    idx = aligned_idx[:, None, None, :, None].expand(b, n_layers, n_heads, t, 1)
    diagonal = p.gather(-1, idx)[..., 0]
    previous = p.gather(-1, (idx - 1).clamp(min=0))[..., 0]
    stats = {
        "entropy": row_mean(entropy),
        "distance": row_mean(distance),
        "diagonal": row_mean(diagonal),
        "previous": row_mean(previous, rows & (aligned_idx > 0)),
        "first": row_mean(p[..., 0]),
    }
    if kind == "cross":
        stats["monotonicity"] = _spearman_with_position(p.argmax(-1), rows)
    if key_mask is not None:
        stats["speaker_mass"] = row_mean((p * key_mask[:, None, None, None, :s]).sum(-1))
    return stats


def _spearman_with_position(argmax: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Spearman correlation (B, L, H) between row index and ``argmax`` (B, L, H, T) over ``rows`` (B, T).

    Ranks of tied argmax values are averaged, as in ``scipy.stats.spearmanr``; row
    indices are already distinct ranks, so only the argmax side needs ranking.
    """
    valid = rows[:, None, None, :]  # (B, 1, 1, T)
    pair = valid[..., None] & valid[..., None, :]  # (B, 1, 1, T, T) both rows valid
    less = ((argmax[..., None, :] < argmax[..., :, None]) & pair).sum(-1)  # (B, L, H, T)
    equal = ((argmax[..., None, :] == argmax[..., :, None]) & pair).sum(-1)
    y = (less + (equal + 1) / 2).float()
    x = torch.arange(argmax.size(-1), dtype=torch.float).expand_as(y)
    n = valid.sum(-1).clamp(min=1)
    dx = (x - (x * valid).sum(-1, keepdim=True) / n[..., None]) * valid
    dy = (y - (y * valid).sum(-1, keepdim=True) / n[..., None]) * valid
    denom = torch.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    return torch.where(denom > 1e-9, (dx * dy).sum(-1) / denom.clamp(min=1e-9), torch.nan)


def _stack_records(
    records: Sequence[AttentionRecord], kind: str, key_masks: Sequence[np.ndarray] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Zero-pad the ``kind`` attention of several records into one (B, L, H, T, S) tensor."""
    for r in records:
        r._check_kind(kind)
    shapes = [r.attentions[kind].shape for r in records]
    if len({s[:2] for s in shapes}) > 1:
        raise ValueError(
            f"records come from models of different sizes (layers, heads): {sorted({s[:2] for s in shapes})}"
        )
    n_layers, n_heads = shapes[0][:2]
    t, s = max(sh[2] for sh in shapes), max(sh[3] for sh in shapes)
    att = torch.zeros(len(records), n_layers, n_heads, t, s)
    for b, r in enumerate(records):
        a = r.attentions[kind]
        att[b, :, :, : a.shape[2], : a.shape[3]] = torch.from_numpy(a)
    q_len = torch.tensor([sh[2] for sh in shapes])
    k_len = torch.tensor([sh[3] for sh in shapes])
    mask = None
    if key_masks is not None:
        mask = torch.zeros(len(records), s, dtype=torch.bool)
        for b, m in enumerate(key_masks):
            if len(m) != shapes[b][3]:
                raise ValueError(
                    f"key mask {b} has {len(m)} entries but the {kind} attention has {shapes[b][3]} keys"
                )
            mask[b, : len(m)] = torch.as_tensor(np.asarray(m, dtype=bool))
    return att, q_len, k_len, mask


def _uniform_like(att: torch.Tensor, k_len: torch.Tensor, causal: bool) -> torch.Tensor:
    """Uniform attention over exactly the keys each row of ``att`` (B, L, H, T, S) can see."""
    _, _, _, t, s = att.shape
    visible = torch.arange(s)[None, None, :] < k_len[:, None, None]  # (B, 1, S)
    if causal:
        visible = visible & (torch.arange(s)[None, :] <= torch.arange(t)[:, None])  # (B, T, S)
    visible = visible.expand(-1, t, s).float()
    return (visible / visible.sum(-1, keepdim=True).clamp(min=1))[:, None, None].expand_as(att)


def _uniform_stats(
    att: torch.Tensor,
    q_len: torch.Tensor,
    k_len: torch.Tensor,
    kind: str,
    key_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``_padded_stats`` of uniform attention with the same shapes and lengths as ``att``."""
    stats = _padded_stats(_uniform_like(att, k_len, kind == "decoder"), q_len, k_len, kind, key_mask)
    if "monotonicity" in stats:  # uniform rows have no argmax; a random one correlates 0 in expectation
        stats["monotonicity"] = torch.zeros_like(stats["monotonicity"])
    return stats


def _summarise(stats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Average per-example stats (B, L, H) over examples, ignoring undefined (NaN) ones."""
    return {name: torch.nanmean(v, dim=0).numpy() for name, v in stats.items()}  # (L, H) each


def _as_records(record_or_batch: AttentionRecord | Sequence[AttentionRecord]) -> list[AttentionRecord]:
    return [record_or_batch] if isinstance(record_or_batch, AttentionRecord) else list(record_or_batch)


def attention_stats(
    record_or_batch: AttentionRecord | Sequence[AttentionRecord], kind: str
) -> dict[str, np.ndarray]:
    """Statistics of ``kind`` attention per layer and head, averaged over the records.

    Returns ``{stat: array (layers, heads)}`` for entropy, distance, diagonal, previous,
    first, and for ``cross`` monotonicity; definitions in ``_padded_stats``.
    Compare against ``uniform_baseline`` to see what "no structure" looks like.
    """
    att, q_len, k_len, _ = _stack_records(_as_records(record_or_batch), kind)
    return _summarise(_padded_stats(att, q_len, k_len, kind))


def uniform_baseline(
    record_or_batch: AttentionRecord | Sequence[AttentionRecord], kind: str
) -> dict[str, np.ndarray]:
    """``attention_stats`` for uniform attention over the same visible keys of the same records.

    Distance and first-token mass depend on sequence length, so a model's number only
    means something next to this baseline. Uniform attention has no preferred key, so
    its monotonicity is reported as 0 (the expectation for a random argmax).
    """
    att, q_len, k_len, _ = _stack_records(_as_records(record_or_batch), kind)
    return _summarise(_uniform_stats(att, q_len, k_len, kind))


def _token_bytes(ids: Sequence[int], tokenizer) -> list[bytes]:
    """The raw UTF-8 bytes each byte-level BPE token stands for (exact, unlike decoding one token)."""
    out = []
    for tok in tokenizer.convert_ids_to_tokens([int(i) for i in ids]):
        if tok in tokenizer.all_special_tokens or any(c not in _BYTE_OF_CHAR for c in tok):
            out.append(tok.encode("utf-8"))  # special or non-byte-level token: its literal text
        else:
            out.append(bytes(_BYTE_OF_CHAR[c] for c in tok))
    return out


def speaker_token_mask(source: str | Sequence[int], tokenizer) -> np.ndarray:
    """Bool mask over the source tokens marking speaker names (SAMSum's ``Name:`` line prefixes).

    A speaker name is the text before the first ``:`` of a dialogue line (up to 40
    characters, followed by a space or the line end); the colon itself is not part of
    the name. A token is marked when its span overlaps a name. Spans are byte offsets
    computed from the tokens themselves, so the mask is exact for ids that were
    truncated or came from a dataset; text is tokenized without special tokens first.
    """
    ids = (
        tokenizer(source, add_special_tokens=False)["input_ids"]
        if isinstance(source, str)
        else _as_ids(source)
    )
    pieces = _token_bytes(ids, tokenizer)
    ends = np.cumsum([len(p) for p in pieces])  # (S,) byte offset where each token ends
    starts = ends - np.array([len(p) for p in pieces])
    mask = np.zeros(len(ids), dtype=bool)
    for match in _SPEAKER.finditer(b"".join(pieces)):
        name_start, name_end = match.span(1)
        mask |= (starts < name_end) & (ends > name_start)
    return mask


def speaker_mass(record: AttentionRecord, speaker_token_mask: np.ndarray) -> np.ndarray:
    """Share of cross-attention mass on speaker-name tokens, (layers, heads), mean over target rows.

    Compare with ``speaker_token_mask.mean()``, the share uniform attention would give.
    """
    att, q_len, k_len, mask = _stack_records([record], "cross", [speaker_token_mask])
    return _padded_stats(att, q_len, k_len, "cross", key_mask=mask)["speaker_mass"][0].numpy()


def stats_over_dataset(
    model: BaseLanguageModel,
    rows: Sequence,
    tokenizer,
    n: int = 100,
    batch_size: int = 16,
    seed: int | None = None,
    corpus: str | None = None,
    speakers: bool = False,
) -> pd.DataFrame:
    """Tidy statistics, one row per (example, kind, layer, head), over ``n`` examples of ``rows``.

    ``rows`` is anything ``extract_attention`` accepts per item (e.g. a tokenized
    ``Dataset`` with ``input_ids``). The first ``n`` rows are used, or with ``seed`` a
    seeded random sample: never a hand-picked set. Rows are batched by length to save
    padding; ``example`` is the row's index in ``rows``. Each statistic has a
    ``uniform_<stat>`` column (the same statistic for uniform attention over the same
    keys). ``speakers=True`` adds ``speaker_mass`` for cross-attention (SAMSum).
    """
    total = len(rows)
    n = min(n, total)
    order = (
        np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
    )
    examples = {int(i): rows[int(i)] for i in order}
    splits = {i: _split_example(model, ex) for i, ex in examples.items()}
    by_length = sorted(examples, key=lambda i: (sum(len(part or []) for part in splits[i]), i))
    frames = []
    for start in range(0, len(by_length), batch_size):
        chunk = by_length[start : start + batch_size]
        batch = _forward(model, [examples[i] for i in chunk])
        for kind, att in batch.attentions.items():
            q_len, k_len = batch.lengths[kind]
            mask = None
            if speakers and kind == "cross":
                masks = [speaker_token_mask(src, tokenizer) for src in batch.source_ids]
                mask = torch.from_numpy(np.stack([np.pad(m, (0, att.shape[-1] - len(m))) for m in masks]))
            stats = _padded_stats(att, q_len, k_len, kind, mask)
            uniform = _uniform_stats(att, q_len, k_len, kind, mask)
            frames.append(_frame(chunk, kind, stats, uniform, q_len, k_len))
    df = pd.concat(frames, ignore_index=True).sort_values(
        ["example", "kind", "layer", "head"], ignore_index=True
    )
    present = [s for s in STATS if s in df.columns]
    df = df[
        [c for c in df.columns if c not in present and not c.startswith("uniform_")]
        + present
        + [f"uniform_{s}" for s in present]
    ]
    if corpus is not None:
        df.insert(0, "corpus", corpus)
    return df


def _frame(
    examples: list[int],
    kind: str,
    stats: dict[str, torch.Tensor],
    uniform: dict[str, torch.Tensor],
    q_len: torch.Tensor,
    k_len: torch.Tensor,
) -> pd.DataFrame:
    """Flatten per-example stats (B, L, H) into long-format rows."""
    b, n_layers, n_heads = stats["entropy"].shape
    ex, layer, head = np.meshgrid(np.arange(b), np.arange(n_layers), np.arange(n_heads), indexing="ij")
    ex = ex.reshape(-1)
    data = {
        "example": np.asarray(examples)[ex],
        "kind": kind,
        "layer": layer.reshape(-1),
        "head": head.reshape(-1),
        "query_len": q_len.numpy()[ex],
        "key_len": k_len.numpy()[ex],
    }
    data |= {name: v.reshape(-1).numpy() for name, v in stats.items()}
    data |= {f"uniform_{name}": v.reshape(-1).numpy() for name, v in uniform.items()}
    return pd.DataFrame(data)


def cross_profile(
    model: BaseLanguageModel, rows: Sequence, tokenizer, bins: int = 10
) -> tuple[np.ndarray, float]:
    """Where cross-attention lands in the source, and whether that depends on the target token.

    Returns ``(profile, dependence)``, both averaged over the examples of ``rows``:

    * ``profile`` (bins,): cross-attention mass by relative source position, in ``bins``
      equal bins from the first to the last source token, mean over target rows, layers
      and heads. It sums to 1; uniform attention gives ``1 / bins`` per bin.
    * ``dependence``: query dependence, the mean total-variation distance between each
      row of a head and that head's mean row. 0 = every target token reads the same
      source tokens (as uniform attention does); near 1 = each target token reads its
      own source tokens (as an alignment would). Entropy cannot see this: a head can be
      sharp and still read the same few source tokens for every target token.

    ``rows`` holds anything ``extract_attention`` accepts per item (e.g. a tokenized
    dataset's ``input_ids``); ``model`` must be an encoder-decoder.
    """
    profile, dependence = np.zeros(bins), []
    for ids in rows:
        att = extract_attention(model, ids, tokenizer).attention("cross")  # (L, H, T, S)
        mass = att.mean(axis=(0, 1, 2))  # (S,)
        where = np.minimum((np.arange(len(mass)) + 0.5) / len(mass) * bins, bins - 1).astype(int)  # (S,) bin
        profile += np.bincount(where, weights=mass, minlength=bins)
        mean_row = att.mean(axis=2, keepdims=True)  # (L, H, 1, S)
        dependence.append(0.5 * np.abs(att - mean_row).sum(-1).mean())
    return profile / len(rows), float(np.mean(dependence))


def cross_headlines(
    model: BaseLanguageModel, rows, tokenizer, n: int, speakers: bool = False
) -> dict[str, float]:
    """The cross-attention numbers Exp 3's verdict rests on, for one model on the first ``n`` of ``rows``
    (a tokenized dataset): mean normalized entropy, monotonicity, query dependence and, with ``speakers``,
    the mass on speaker names over their share of the source.

    The same call serves the trained models, an untrained one and another seed, so a difference between
    corpora can be set against what the controls show.
    """
    df = stats_over_dataset(model, rows, tokenizer, n=n, speakers=speakers)
    cross = df[df["kind"] == "cross"]
    _, dependence = cross_profile(model, [rows[i]["input_ids"] for i in range(min(n, len(rows)))], tokenizer)
    out = {
        "entropy": float(cross["entropy"].mean()),
        "monotonicity": float(cross["monotonicity"].mean()),
        "query_dependence": dependence,
    }
    if speakers:
        out["speaker_ratio"] = float(cross["speaker_mass"].mean() / cross["uniform_speaker_mass"].mean())
    return out


# Exp 3's hypothesis, per statistic: on SAMSum cross-attention is sharper (lower entropy), walks forward
# (higher monotonicity) and depends more on the target token (higher query dependence) than on raw text.
HYPOTHESIS_SIGN = {"entropy": -1, "monotonicity": +1, "query_dependence": +1}


def corpus_contrast(
    samsum: dict[str, float], rawtext: dict[str, float], untrained: dict[str, dict], rawtext_seeds: list[dict]
) -> pd.DataFrame:
    """SAMSum minus raw text per statistic, for trained models and for an untrained one, against the seed
    spread of the raw-text model.

    ``untrained`` maps ``samsum`` / ``rawtext`` to an untrained model's ``cross_headlines``. The effect of
    training is the trained difference minus the untrained one (which comes from the corpora's lengths and
    shapes alone); a statistic supports the hypothesis only when that effect has the hypothesised sign and
    exceeds twice the spread between raw-text seeds, and the trained models themselves differ in that
    direction by more than that too: an effect that the untrained control's difference makes, while the
    trained models' own difference is within the noise, is not counted. One seed gives no spread: the
    verdict then says so.
    """
    rows = {}
    for stat, sign in HYPOTHESIS_SIGN.items():
        trained = samsum[stat] - rawtext[stat]
        control = untrained["samsum"][stat] - untrained["rawtext"][stat]
        values = [s[stat] for s in rawtext_seeds]
        spread = max(values) - min(values) if len(values) > 1 else math.nan
        effect = trained - control
        if math.isnan(spread):
            verdict = "cannot decide: one seed, no noise estimate"
        elif abs(effect) <= 2 * spread:
            verdict = "within noise"
        elif effect * sign > 0 and trained * sign <= 2 * spread:
            verdict = "cannot decide: only the untrained control's difference makes the effect"
        else:
            verdict = "as hypothesised" if effect * sign > 0 else "opposite to the hypothesis"
        rows[stat] = {
            "SAMSum − raw, trained": trained,
            "SAMSum − raw, untrained": control,
            "effect of training": effect,
            "raw-text seed spread": spread,
            "verdict": verdict,
        }
    return pd.DataFrame(rows).T
