"""Exp 1's comparison of architectures on the same raw text: what each arm measured, the four ways of
holding something equal (steps, wall-clock, parameters, targets), and the findings in sentences.

The arms read the same chunks in different layouts and learn from different tokens, so a comparison is
only fair on what they share: the second-half tokens. These functions keep that bookkeeping in one
place; the notebook measures (perplexity, memory, FLOPs, samples) and prints what they return.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# The arms whose continuations are scored for repetition (the prefix LM and the matched model are controls
# of the perplexity comparison only).
SAMPLED = ("encdec", "deconly")

# The notebook's metrics table: column -> (key of ``ArmMeasures.metrics``, format).
TABLE_COLUMNS = {
    "ppl, 2nd half": ("ppl_second_half", "{:.2f}"),
    "ppl, all tokens": ("ppl_all_tokens", "{:.2f}"),
    "input tok/s": ("tokens_per_s", "{:,.0f}"),
    "supervised tok/s": ("supervised_tokens_per_s", "{:,.0f}"),
    "train time (s)": ("train_time_s", "{:.0f}"),
    "peak train mem (MiB)": ("peak_mem_mb", "{:.0f}"),
    "params": ("total_parameters", "{:,.0f}"),
    "non-emb params": ("non_embedding_parameters", "{:,.0f}"),
    "cross-attn share": ("cross_attention_share", "{:.1%}"),
    "MFLOPs / supervised tok": ("mflops_per_supervised_token", "{:.2f}"),
    "MFLOPs / 2nd-half tok": ("mflops_per_second_half_token", "{:.2f}"),
    "repetition (greedy)": ("repetition_rate", "{:.3f}"),
    "distinct-2 (top-p)": ("distinct_2_top_p", "{:.3f}"),
}


def run_speed(history) -> dict:
    """A finished run's totals from its history: steps, training seconds, input and supervised tokens per
    second, and its best validation loss."""
    last = history[-1]
    return {
        "steps": int(last["step"]),
        "train_time_s": float(last["wall_time"]),
        "tokens_per_s": float(last["tokens"] / last["wall_time"]),
        "supervised_tokens_per_s": float(last["supervised_tokens"] / last["wall_time"]),
        "best_val_loss": history.best_val_loss(),
    }


def value_at_time(frame: pd.DataFrame, t: float) -> tuple[float, int]:
    """A run's validation loss at training time ``t`` (linear between its evaluations) and the steps it
    had taken by then: a run stopped at ``t`` is exactly this prefix of the whole run."""
    ev = frame.dropna(subset=["val_loss"])
    step = int(np.searchsorted(frame.wall_time.to_numpy(), t, side="right"))
    return float(np.interp(t, ev.wall_time, ev.val_loss)), min(step, len(frame))


@dataclass
class ArmMeasures:
    """What Exp 1 measured, by arm name: second-half perplexity (``perplexity``'s dicts), speed
    (``run_speed``), peak training memory (MiB), parameter counts, training FLOPs, ``d_ff``, and the
    continuation quality table (rows ``"<arm> greedy"``, ``"<arm> top-p"``, ``"reference"``).
    ``ppl_all`` holds the all-token perplexity where it was measured (the decoder-only model)."""

    ppl: dict[str, dict]
    speed: dict[str, dict]
    memory_mb: dict[str, float]
    params: dict[str, dict]
    flops: dict[str, dict]
    d_ff: dict[str, int]
    quality: pd.DataFrame
    ppl_all: dict[str, dict] = field(default_factory=dict)

    def metrics(self, name: str) -> dict:
        """One arm's stored metrics: everything above, flat, with the derived shares and per-token FLOPs."""
        p, s, f = self.params[name], self.speed[name], self.flops[name]
        out = {
            "ppl_second_half": self.ppl[name]["ppl"],
            "loss_second_half": self.ppl[name]["loss"],
            **s,
            "peak_mem_mb": self.memory_mb[name],
            "parameters": p,
            "total_parameters": p["total"],
            "non_embedding_parameters": p["non_embedding"],
            "cross_attention_share": p["cross_attention"] / p["total"],
            "flops_per_supervised_token": f["per_supervised_token"],
            "flops_per_second_half_token": f["per_second_half_token"],
            "mflops_per_supervised_token": f["per_supervised_token"] / 1e6,
            "mflops_per_second_half_token": f["per_second_half_token"] / 1e6,
            "d_ff": self.d_ff[name],
        }
        if name in self.ppl_all:
            out["ppl_all_tokens"] = self.ppl_all[name]["ppl"]
        if name in SAMPLED:
            q = self.quality
            out["repetition_rate"] = float(q.loc[f"{name} greedy", "repetition rate (4-grams)"])
            out["repetition_rate_top_p"] = float(q.loc[f"{name} top-p", "repetition rate (4-grams)"])
            out["distinct_2_top_p"] = float(q.loc[f"{name} top-p", "distinct-2"])
        return out

    def table(self, labels: dict[str, str]) -> pd.io.formats.style.Styler:
        """The seed's metrics table, one row per arm (``labels``: arm -> row name); "—" where an arm was
        not measured that way."""
        rows = {}
        for name, label in labels.items():
            m = self.metrics(name)
            rows[label] = {col: m.get(key, np.nan) for col, (key, _) in TABLE_COLUMNS.items()}
        formats = {col: fmt for col, (_, fmt) in TABLE_COLUMNS.items()}
        return pd.DataFrame(rows).T.style.format(formats, na_rep="—")

    def comparisons(self, frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict]:
        """The encoder-decoder against a decoder-only arm four ways: at equal steps, at equal wall-clock
        (read off the histories ``frames`` at the faster run's whole training time), at equal parameters
        (the matched model, where the budget trains it) and at equal targets (the prefix LM). Returns the
        table (with the winner and the enc-dec / dec-only ratio) and the equal-wall-clock point."""
        ppl, speed = self.ppl, self.speed
        t_equal = min(speed["encdec"]["train_time_s"], speed["deconly"]["train_time_s"])
        loss_t = {name: value_at_time(frames[name], t_equal) for name in ("encdec", "deconly")}

        def versus(measure: str, other: str, enc: float | None = None, dec: float | None = None) -> dict:
            return {
                "measure": measure,
                "encoder-decoder": ppl["encdec"]["ppl"] if enc is None else enc,
                "decoder-only": ppl[other]["ppl"] if dec is None else dec,
                "steps": f"{speed['encdec']['steps']} / {speed[other]['steps']}",
            }

        matched = "deconly_matched" in ppl  # a budget may leave the parameter-matched arm out (``arms``)
        rows = {
            "equal steps": versus("test ppl, 2nd half", "deconly"),
            "equal wall-clock": {
                **versus(f"val loss at {t_equal:.0f} s (dec-only: all tokens)", "deconly"),
                "encoder-decoder": loss_t["encdec"][0],
                "decoder-only": loss_t["deconly"][0],
                "steps": f"{loss_t['encdec'][1]} / {loss_t['deconly'][1]}",
            },
            **({"equal parameters": versus("test ppl, 2nd half", "deconly_matched")} if matched else {}),
            "same targets, one stack": versus("test ppl, 2nd half (dec-only: prefix LM)", "prefix_lm"),
        }
        comp = pd.DataFrame(rows).T
        enc, dec = comp["encoder-decoder"].astype(float), comp["decoder-only"].astype(float)
        comp["winner"] = np.where(enc < dec, "encoder-decoder", "decoder-only")
        comp["enc-dec / dec-only"] = enc / dec
        offset = self.ppl_all["deconly"]["loss"] - ppl["deconly"]["loss"]
        equal_time = {
            "seconds": t_equal,
            "encdec_val_loss": loss_t["encdec"][0],
            "deconly_val_loss": loss_t["deconly"][0],
            "all_minus_second_half": offset,
            "deconly_second_half_estimate": loss_t["deconly"][0] - offset,
        }
        return comp, equal_time


def prediction_findings(verdict_rows: list[dict], largest: float) -> list[str]:
    """The seed's four predictions in sentences: how many hold, what each other one measured, and
    whether the run could show the predicted perplexity ratio at all (``largest`` = unigram /
    decoder-only perplexity)."""
    holds = [r["prediction"] for r in verdict_rows if r["verdict"] == "holds"]
    lines = [
        f"Of the seed's four predictions, {len(holds)} hold{'s' if len(holds) == 1 else ''} at this budget"
        + (f" ({'; '.join(holds)})" if holds else "")
        + "."
    ]
    for r in verdict_rows:
        if r["verdict"] != "holds":
            opposite = r["direction (enc-dec worse/slower/bigger)"] != "yes"
            lines.append(
                f"- {r['verdict']}: {r['prediction']}: predicted {r['predicted']}, "
                f"measured {r['measured']:.2f}× (seeds: {r['seed range']})"
                + (", the opposite direction" if opposite else "")
            )
    if largest < 3:
        lines.append(
            f"- The decoder-only model is only {largest:.2f}× below the unigram model, so no perplexity "
            "ratio above that could be seen here: the run is too short to test a 2–3× prediction fully."
        )
    return lines


def measured_findings(m: ArmMeasures, ratios: dict, supervised_ratio: float, n_second_half: int) -> list[str]:
    """What the arms measured, in sentences: the perplexities on the same second-half tokens and their
    ratios (what the separate encoder costs, what learning half the tokens costs), the cost per step
    and per supervised token, and the repetition of greedy continuations against human text.
    ``supervised_ratio``: supervised tokens seen, encoder-decoder / decoder-only."""
    ppl = {n: p["ppl"] for n, p in m.ppl.items()}
    gap = ppl["encdec"] / ppl["deconly"]
    rep = m.quality["repetition rate (4-grams)"]
    return [
        f"Perplexity: on the same {n_second_half:,} second-half tokens the encoder-decoder reaches "
        f"{ppl['encdec']:.1f}, the decoder-only model {ppl['deconly']:.1f} ({gap:.2f}×"
        + (", the encoder-decoder is worse" if gap > 1 else ", the encoder-decoder is better")
        + ")."
        + (
            f" With matched parameters the decoder-only model reaches {ppl['deconly_matched']:.1f} "
            f"({ppl['encdec'] / ppl['deconly_matched']:.2f}×)."
            if "deconly_matched" in ppl
            else " The parameter-matched decoder-only arm was not trained at this budget."
        ),
        f"Prefix LM (the decoder-only weights, first half read bidirectionally, only the second half "
        f"learnt): {ppl['prefix_lm']:.1f}. The encoder-decoder / prefix LM ratio, "
        f"{ppl['encdec'] / ppl['prefix_lm']:.2f}×, is what the separate encoder and cross-attention cost at "
        f"equal targets; prefix LM / decoder-only, {ppl['prefix_lm'] / ppl['deconly']:.2f}×, is what "
        "learning only the second half costs (one seed each).",
        f"Cost: per step the encoder-decoder took {ratios['time']:.2f}× the decoder-only model's time and "
        f"{ratios['memory']:.2f}× its training memory, but learnt from {supervised_ratio:.2f}× as many "
        "supervised tokens: per supervised token it needs "
        f"{m.flops['encdec']['per_supervised_token'] / m.flops['deconly']['per_supervised_token']:.2f}× "
        "the FLOPs.",
        f"Generation: greedy repetition rate {rep['encdec greedy']:.2f} (encoder-decoder) vs "
        f"{rep['deconly greedy']:.2f} (decoder-only), human text {rep['reference']:.2f}.",
    ]
