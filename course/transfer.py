"""Exp 5: start an encoder-decoder from a decoder-only language model, the variants of that transfer, and
the reports that judge them.

The layers share parameter shapes, so the decoder-only weights seed every encoder layer (only the mask
changes), every decoder layer's self-attention, FFN and norms, and optionally the cross-attention (which
has no pretrained counterpart: copied from self-attention, ``cross_init="self"``, or left fresh)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from course.evaluation import DISTINCT_FLOOR
from reftx_lib.model.transformer import ReferenceDecoderOnly, ReferenceTransformer

CROSS_INITS = ("self", "random")


@torch.no_grad()
def convert_decoder_only_to_encoder_decoder(
    dec_model: ReferenceDecoderOnly,
    cross_init: str = "self",
    init_encoder: bool = True,
    init_decoder: bool = True,
    init_embedding: bool = True,
    max_len: int | None = None,
) -> ReferenceTransformer:
    """A ``ReferenceTransformer`` of the same sizes, initialized from ``dec_model``'s weights so Exp 5 can
    measure transfer. ``init_encoder=False`` keeps the encoder fresh, ``init_decoder=False`` the decoder
    (cross-attention included), ``init_embedding=False`` the shared embedding (seed torch beforehand).
    The result is on ``dec_model``'s device in training mode; ``dec_model`` is not modified."""
    if not isinstance(dec_model, ReferenceDecoderOnly):
        raise TypeError(f"dec_model must be a ReferenceDecoderOnly, got {type(dec_model).__name__}")
    if cross_init not in CROSS_INITS:
        raise ValueError(f"unknown cross_init {cross_init!r}; allowed values: {list(CROSS_INITS)}")
    pretrained_len = dec_model.config.max_len
    config = dec_model.config.replace(prefix_lm=False, max_len=pretrained_len if max_len is None else max_len)
    if config.max_len < pretrained_len:
        raise ValueError(f"max_len={config.max_len} is below the pretrained model's {pretrained_len}")
    device = next(dec_model.parameters()).device
    model = ReferenceTransformer(config=config)  # fresh init first, so the RNG use matches a scratch model
    if init_embedding:
        model.embed.weight.copy_(dec_model.embed.weight)
        if not config.tie_embeddings:
            model.lm_head.weight.copy_(dec_model.lm_head.weight)
    # load_state_dict copies in place and refuses modules whose parameter names or shapes differ
    for src, enc, dst in zip(dec_model.layers, model.encoder_layers, model.decoder_layers):
        if init_encoder:  # the same self-attention, FFN and norms; only the mask differs
            enc.load_state_dict(src.state_dict())
        if init_decoder:
            for part in ("self_attn", "self_norm", "ffn", "ffn_norm"):
                getattr(dst, part).load_state_dict(getattr(src, part).state_dict())
            if cross_init == "self":
                dst.cross_attn.load_state_dict(src.self_attn.state_dict())
                dst.cross_norm.load_state_dict(src.self_norm.state_dict())
    if init_encoder:
        model.encoder_norm.load_state_dict(dec_model.norm.state_dict())
    if init_decoder:
        model.decoder_norm.load_state_dict(dec_model.norm.state_dict())
    return model.to(device).train()


# Exp 5's initializations: name -> converter arguments (None: a fresh ReferenceTransformer).
TRANSFER_VARIANTS: dict[str, dict | None] = {
    "scratch": None,
    "transfer": dict(cross_init="self"),
    "transfer_random_cross": dict(cross_init="random"),
    "encoder_only": dict(init_decoder=False),
    "decoder_only": dict(init_encoder=False, cross_init="self"),
    "embedding_only": dict(init_encoder=False, init_decoder=False),
}
# The equal-compute control: a fresh model fine-tuned for the pretraining's steps plus the fine-tuning's.
EQUAL_COMPUTE = "scratch_equal_compute"


def transfer_model(
    variant: str, dec_model: ReferenceDecoderOnly, seed: int = 0, max_len: int | None = None
) -> ReferenceTransformer:
    """The initial encoder-decoder of one of Exp 5's variants (``TRANSFER_VARIANTS``, or ``EQUAL_COMPUTE``).

    Every variant draws its fresh weights from the same seed, so two variants differ only in what they
    copy, and ``scratch`` is exactly the fresh init the transferred variants start from.
    """
    args = None if variant == EQUAL_COMPUTE else TRANSFER_VARIANTS.get(variant, "unknown")
    if args == "unknown":
        raise ValueError(
            f"unknown Exp 5 variant {variant!r}; allowed values: {[*TRANSFER_VARIANTS, EQUAL_COMPUTE]}"
        )
    torch.manual_seed(seed)
    if args is None:
        config = dec_model.config if max_len is None else dec_model.config.replace(max_len=max_len)
        return ReferenceTransformer(config=config).to(next(dec_model.parameters()).device).train()
    return convert_decoder_only_to_encoder_decoder(dec_model, max_len=max_len, **args)


@torch.no_grad()
def copied_share(model: ReferenceTransformer, dec_model: ReferenceDecoderOnly) -> dict[str, float]:
    """What a converted model took from the pretrained one: the share of its parameters that equal a
    pretrained tensor, and how many encoder and decoder tensors did (a check that a variant copies
    what its name says)."""
    pretrained = list(dec_model.parameters())
    copied = {
        name: p.numel()
        for name, p in model.named_parameters()
        if any(p.shape == q.shape and torch.equal(p, q.to(p.device)) for q in pretrained)
    }
    return {
        "share of parameters copied": sum(copied.values()) / sum(p.numel() for p in model.parameters()),
        "encoder tensors copied": sum(n.startswith("encoder") for n in copied),
        "decoder tensors copied": sum(n.startswith("decoder") for n in copied),
    }


def _judge(diff: float, noise: float | None, yes: str, no: str, unit: str = "nats") -> str:
    """``yes`` when ``diff`` exceeds twice the seed noise, ``no`` when it is below minus that."""
    if noise is None:
        return "cannot decide: one seed, no noise estimate"
    if diff > 2 * noise:
        return yes
    if diff < -2 * noise:
        return no
    digits = 3 if unit == "nats" else 1
    return f"cannot decide: {diff:+.{digits}f} {unit} is within twice the seed noise ({2 * noise:.{digits}f})"


def transfer_summary(records: list[dict]) -> dict:
    """Exp 5's comparisons, computed from its runs' best validation losses and set against seed noise.

    ``records``: one dict per run with ``variant``, ``fraction``, ``seed`` and ``val_loss``. The noise is
    the largest seed-to-seed range of any (variant, fraction) cell trained at more than one seed; a
    difference decides a question only beyond twice that. Per fraction (mean over seeds where a cell has
    several): the pretraining gain (scratch minus transfer) and its verdict, the same gain per seed, the
    transfer against the equal-compute control, and what the embedding alone, the encoder alone and the
    decoder alone give.
    """
    frame = pd.DataFrame(records)
    cells = frame.groupby(["variant", "fraction"])["val_loss"]
    mean = cells.mean()
    spread = (cells.max() - cells.min())[cells.size() > 1]
    noise = float(spread.max()) if len(spread) else None
    out: dict = {
        "noise": noise,
        "noise_cells": {f"{v}@{f:g}": float(s) for (v, f), s in spread.items()},
        "fractions": {},
    }
    for f in sorted(frame["fraction"].unique()):
        m = {v: float(loss) for (v, frac), loss in mean.items() if frac == f}.get
        gain = m("scratch", np.nan) - m("transfer", np.nan)
        here = frame[frame["fraction"] == f].pivot_table(index="seed", columns="variant", values="val_loss")
        row = {
            "transfer_gain": gain,
            "pretraining_helps": _judge(gain, noise, "helps", "hurts"),
            "gain_per_seed": (
                {int(s): float(v) for s, v in (here["scratch"] - here["transfer"]).dropna().items()}
                if {"scratch", "transfer"} <= set(here.columns)
                else {}
            ),
        }
        if not np.isnan(m(EQUAL_COMPUTE, np.nan)):
            row["transfer_vs_equal_compute"] = m(EQUAL_COMPUTE, np.nan) - m("transfer", np.nan)
            row["beats_equal_compute"] = _judge(
                row["transfer_vs_equal_compute"],
                noise,
                "yes: pretraining beats spending the same tokens on SAMSum",
                "no: the same tokens spent on SAMSum do better",
            )
        for part in ("embedding_only", "encoder_only", "decoder_only", "transfer_random_cross"):
            if not np.isnan(m(part, np.nan)):
                row[f"{part}_gain"] = m("scratch", np.nan) - m(part, np.nan)
        if "embedding_only_gain" in row and gain > 0:
            row["embedding_share_of_gain"] = row["embedding_only_gain"] / gain
        out["fractions"][f"{f:g}"] = row
    return out


def transfer_report(summary: dict) -> str:
    """``transfer_summary`` as the sentences notebook 07 prints: each verdict with the numbers behind it."""
    noise = summary["noise"]
    lines = [
        "seed noise: "
        + (
            f"{noise:.3f} nats (largest seed-to-seed range: "
            + ", ".join(f"{k} {v:.3f}" for k, v in summary["noise_cells"].items())
            + "); a difference decides only beyond twice that"
            if noise is not None
            else "unknown (every cell has one seed)"
        )
    ]
    for f, row in summary["fractions"].items():
        lines.append(f"\n{float(f):.0%} of SAMSum:")
        per_seed = ", ".join(f"seed {s}: {g:+.3f}" for s, g in row["gain_per_seed"].items())
        lines.append(
            f"  pretraining gain (scratch - transfer) {row['transfer_gain']:+.3f} nats"
            + (f" ({per_seed})" if len(row["gain_per_seed"]) > 1 else "")
            + f": {row['pretraining_helps']}"
        )
        if "beats_equal_compute" in row:
            lines.append(
                f"  against the equal-compute scratch model {row['transfer_vs_equal_compute']:+.3f} nats in "
                f"transfer's favour: {row['beats_equal_compute']}"
            )
        parts = [
            f"{name} {row[f'{name}_gain']:+.3f}"
            for name in ("embedding_only", "encoder_only", "decoder_only", "transfer_random_cross")
            if f"{name}_gain" in row
        ]
        if parts:
            lines.append("  gain over scratch of each partial copy: " + ", ".join(parts) + " nats")
        if "embedding_share_of_gain" in row:
            share = row["embedding_share_of_gain"]
            lines.append(f"  the embedding alone gives {share:.0%} of the full copy's gain")
    return "\n".join(lines)


def rouge_report(records: list[dict], distinct_floor: float = DISTINCT_FLOOR) -> str:
    """Test ROUGE-1 of scratch, transfer and the equal-compute control per fraction, set against the loss.

    ``records``: one dict per run with ``variant``, ``fraction``, ``seed``, ``rouge1`` and
    ``distinct_share`` (the share of distinct summaries over the test dialogues). ROUGE's noise is its
    largest seed-to-seed range; transfer minus scratch decides only beyond twice that. A model whose summaries
    are mostly repeats (``distinct_share`` below ``distinct_floor``) is named: much of its ROUGE scores a few
    generic sentences against every reference, so it cannot rank it against a model that reads the
    dialogue, however the numbers fall.
    """
    frame = pd.DataFrame(records)
    shown = [v for v in ("scratch", "transfer", EQUAL_COMPUTE) if v in set(frame["variant"])]
    cells = frame.groupby(["variant", "fraction"])
    spread = (cells["rouge1"].max() - cells["rouge1"].min())[cells.size() > 1]
    noise = float(spread.max()) if len(spread) else None
    lines = [
        "ROUGE-1 seed noise: "
        + (f"{noise:.1f} points (largest seed-to-seed range)" if noise is not None else "unknown (one seed)")
    ]
    for f in sorted(frame["fraction"].unique()):
        here = frame[frame["fraction"] == f]
        parts, generic = [], []
        for v in shown:
            runs = here[here["variant"] == v]
            if runs.empty:
                continue
            distinct = float(runs["distinct_share"].mean())
            parts.append(f"{v} {runs['rouge1'].mean():.1f} ({distinct:.0%} distinct summaries)")
            if distinct < distinct_floor:
                generic.append((v, distinct))
        lines.append(f"{f:.0%} of SAMSum, test ROUGE-1: " + ", ".join(parts))
        means = here.groupby("variant")["rouge1"].mean()
        if {"scratch", "transfer"} <= set(means.index):
            diff = float(means["transfer"] - means["scratch"])
            verdict = _judge(diff, noise, "transfer scores higher", "scratch scores higher", unit="points")
            lines.append(f"  transfer - scratch {diff:+.1f} points: {verdict}")
        for v, distinct in generic:
            lines.append(
                f"  {v} repeats its summaries (only {distinct:.0%} of them are distinct): much of its "
                "ROUGE-1 scores generic sentences, not readings of the dialogues, so ROUGE cannot rank it "
                "against the others"
            )
    return "\n".join(lines)
