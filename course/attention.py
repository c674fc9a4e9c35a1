"""Exp 3's and Exp 1's attention analyses, on top of ``reftx_lib.attention``.

* ``stats_over_dataset``: a tidy DataFrame, one row per (example, kind, layer, head), each statistic
  next to uniform attention over the same keys (notebooks 04 and 05);
* ``monotonicity``: whether cross-attention walks forward through the source as the target goes on;
* ``speaker_token_mask`` / ``speaker_mass``: SAMSum's speaker names and the cross-attention mass on them;
* ``cross_profile``: where in the source cross-attention lands, and whether it depends on the target token;
* ``cross_headlines`` / ``corpus_contrast``: the numbers Exp 3's verdict rests on, set against an
  untrained model and the seed spread;
* ``plot_stat_distributions``: violins of one statistic per kind and corpus.

Rows are queries and columns keys, as everywhere in ``reftx_lib.attention``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import nn
from transformers.convert_slow_tokenizer import bytes_to_unicode

from reftx_lib.attention.extract import (
    AttentionRecord,
    as_ids,
    extract_attention,
    forward_batch,
    split_example,
)
from reftx_lib.attention.plots import save_figure
from reftx_lib.attention.stats import padded_stats, stack_records, uniform_stats

STATS = ("entropy", "distance", "diagonal", "previous", "first", "monotonicity", "speaker_mass")
_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}  # byte-level BPE alphabet -> raw byte
_SPEAKER = re.compile(rb"(?m)^[ \t]*([^\r\n:]{1,40}):(?=[ \t\r\n]|$)")  # "Name:" at a line start


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

    A speaker name is the text before the first ``:`` of a dialogue line (up to 40 characters,
    followed by a space or the line end); the colon itself is not part of the name. A token is marked
    when its span overlaps a name. Spans are byte offsets computed from the tokens themselves, so the
    mask is exact for ids that were truncated or came from a dataset; text is tokenized without
    special tokens first.
    """
    ids = (
        tokenizer(source, add_special_tokens=False)["input_ids"]
        if isinstance(source, str)
        else as_ids(source)
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
    att, q_len, k_len = stack_records(record, "cross")  # (1, L, H, T, S)
    if len(speaker_token_mask) != k_len[0]:
        raise ValueError(
            f"the speaker mask has {len(speaker_token_mask)} entries but the cross attention has "
            f"{int(k_len[0])} keys"
        )
    mask = torch.as_tensor(np.asarray(speaker_token_mask, dtype=bool))[None]  # (1, S)
    return padded_stats(att, q_len, k_len, "cross", key_mask=mask)["key_mass"][0].numpy()


def monotonicity(att: torch.Tensor, q_len: torch.Tensor, k_len: torch.Tensor) -> torch.Tensor:
    """Exp 3's forward walk, per example (B, L, H) of zero-padded cross-attention ``att`` (B, L, H, T, S):
    the Spearman correlation of each target row's position and the source key it reads most, over the
    rows ``padded_stats`` averages (ties ranked as scipy's); NaN where the argmax never moves."""
    argmax = att.argmax(-1)  # (B, L, H, T); padded keys hold zeros, so they are never the argmax
    rows = (torch.arange(att.size(-2))[None] < q_len[:, None]) & (k_len[:, None] > 1)  # (B, T) with a choice
    valid = rows[:, None, None, :]  # (B, 1, 1, T)
    pair = valid[..., None] & valid[..., None, :]  # (B, 1, 1, T, T) both rows valid
    less = ((argmax[..., None, :] < argmax[..., :, None]) & pair).sum(-1)  # (B, L, H, T)
    equal = ((argmax[..., None, :] == argmax[..., :, None]) & pair).sum(-1)
    y = (less + (equal + 1) / 2).float()  # the argmax's rank among the valid rows
    x = torch.arange(argmax.size(-1), dtype=torch.float).expand_as(y)
    n = valid.sum(-1).clamp(min=1)
    dx = (x - (x * valid).sum(-1, keepdim=True) / n[..., None]) * valid
    dy = (y - (y * valid).sum(-1, keepdim=True) / n[..., None]) * valid
    denom = torch.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    return torch.where(denom > 1e-9, (dx * dy).sum(-1) / denom.clamp(min=1e-9), torch.nan)


def stats_over_dataset(
    model: nn.Module,
    rows: Sequence,
    tokenizer,
    n: int = 100,
    batch_size: int = 16,
    seed: int | None = None,
    corpus: str | None = None,
    speakers: bool = False,
) -> pd.DataFrame:
    """Tidy statistics, one row per (example, kind, layer, head), over ``n`` examples of ``rows``.

    ``rows`` is anything ``extract_attention`` accepts per item (e.g. a tokenized ``Dataset`` with
    ``input_ids``). The first ``n`` rows are used, or with ``seed`` a seeded random sample: never a
    hand-picked set. Rows are batched by length to save padding; ``example`` is the row's index in
    ``rows``. Each statistic has a ``uniform_<stat>`` column (the same statistic for uniform attention
    over the same keys). ``speakers=True`` adds ``speaker_mass`` for cross-attention (SAMSum).
    """
    total = len(rows)
    n = min(n, total)
    order = (
        np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
    )
    examples = {int(i): rows[int(i)] for i in order}
    splits = {i: split_example(model, ex) for i, ex in examples.items()}
    by_length = sorted(examples, key=lambda i: (sum(len(part or []) for part in splits[i]), i))
    frames = []
    for start in range(0, len(by_length), batch_size):
        chunk = by_length[start : start + batch_size]
        batch = forward_batch(model, [examples[i] for i in chunk])
        for kind, att in batch.attentions.items():  # (B, L, H, T, S)
            q_len, k_len = batch.lengths[kind]
            mask = None
            if speakers and kind == "cross":
                masks = [speaker_token_mask(src, tokenizer) for src in batch.source_ids]
                mask = torch.from_numpy(np.stack([np.pad(m, (0, att.shape[-1] - len(m))) for m in masks]))
            stats, uniform = (f(att, q_len, k_len, kind, mask) for f in (padded_stats, uniform_stats))
            if kind == "cross":  # uniform attention reads every key alike, so it walks nowhere
                stats["monotonicity"] = monotonicity(att, q_len, k_len)
                uniform["monotonicity"] = torch.zeros_like(stats["monotonicity"])
            for s in (stats, uniform):
                if "key_mass" in s:
                    s["speaker_mass"] = s.pop("key_mass")
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


def cross_profile(model: nn.Module, rows: Sequence, tokenizer, bins: int = 10) -> tuple[np.ndarray, float]:
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


def cross_headlines(model: nn.Module, rows, tokenizer, n: int, speakers: bool = False) -> dict[str, float]:
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


def plot_stat_distributions(
    df: pd.DataFrame,
    stat: str = "entropy",
    x: str = "kind",
    hue: str | None = "corpus",
    path: str | Path | None = None,
    ax=None,
) -> Figure:
    """Violin plots of one statistic from ``stats_over_dataset`` frames, e.g. comparing corpora.

    Each violin pools every (example, layer, head) row of its group. When the frame has
    ``uniform_<stat>``, a black ``x`` marks the mean uniform-attention value of each group.
    """
    if stat not in df.columns:
        raise ValueError(
            f"no column {stat!r}; statistics in this frame: {[c for c in STATS if c in df.columns]}"
        )
    hue = hue if hue in df.columns else None
    data = df.dropna(subset=[stat])
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    order = list(pd.unique(data[x]))
    hue_order = list(pd.unique(data[hue])) if hue else [None]
    sns.violinplot(
        data=data,
        x=x,
        y=stat,
        hue=hue,
        order=order,
        hue_order=hue_order if hue else None,
        cut=0,
        inner="quartile",
        ax=ax,
    )
    baseline = f"uniform_{stat}"
    if baseline in data.columns:
        width = 0.8 / len(hue_order)  # seaborn's default dodge: groups share 0.8 of each slot
        for k, level in enumerate(hue_order):
            part = data if level is None else data[data[hue] == level]
            means = part.groupby(x)[baseline].mean()
            xs = [order.index(cat) - 0.4 + width * (k + 0.5) for cat in means.index]
            ax.scatter(
                xs,
                means.values,
                marker="x",
                color="black",
                zorder=3,
                label="uniform attention" if k == 0 else None,
            )
        ax.legend(fontsize=8, title=hue)
    ax.set_title(f"{stat} per (example, layer, head)")
    if path is not None:
        save_figure(ax.figure, path)
    return ax.figure
