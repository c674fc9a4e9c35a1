"""What every notebook reports about the models it trained: has each validation curve flattened, how fast
did it train, and how much of this CPU's matrix-multiply rate that speed is.

Every number of the ``full`` budget rests on models trained until their curves flatten
(``FLAT``), so each notebook prints this table for every model it trains,
and its results file stores the curves (``curves_metrics``).
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from course.accounting import flops_per_token
from reftx_lib.model.transformer import BaseLanguageModel
from reftx_lib.train.trainer import History

if TYPE_CHECKING:  # course.experiments imports course.scaling, which reads histories here
    from course.experiments import CourseModel

FLAT = 0.02  # a curve whose last quarter improves the validation loss by less than 2% has flattened


def curve(history: History) -> list[list[float]]:
    """The validation curve, ``[[step, val_loss], ...]``: what a results file stores per model."""
    return [[r["step"], r["val_loss"]] for r in history.evals()]


def last_quarter_improvement(history: History) -> float:
    """How much the validation loss still fell over the last quarter of the run, relative:
    ``(L(q) - L(end)) / L(q)``, with ``L(q)`` the last evaluation at or before 3/4 of the steps.

    Below ``FLAT`` (2%) the curve has flattened: more steps of this schedule would change
    little. NaN when no evaluation lies in the first three quarters.
    """
    evals = history.evals()
    if not evals:
        return float("nan")
    end = evals[-1]
    before = [r for r in evals if r["step"] <= 0.75 * end["step"]]
    if not before:
        return float("nan")
    return (before[-1]["val_loss"] - end["val_loss"]) / before[-1]["val_loss"]


def flattened(history: History) -> bool:
    """True when the last quarter improved the validation loss by less than ``FLAT``."""
    return last_quarter_improvement(history) < FLAT


def steady_step_seconds(history: History, skip: float = 0.1) -> float:
    """The median training time of one optimizer step after the first ``skip`` share of the steps:
    the run's own steady-state speed, which warm-up, a first-batch allocation or a short burst of
    other load on the machine cannot move much (a mean or a total would)."""
    times = [r["wall_time"] for r in history]
    steps = [b - a for a, b in zip(times, times[1:])][int(skip * len(times)) :]
    if not steps:
        raise ValueError(f"a history of {len(history)} steps has no steady state to time: train longer")
    return statistics.median(steps)


def flops_per_supervised_token(model: BaseLanguageModel, rows: list[list[int]]) -> float:
    """Training FLOPs per supervised token of ``model`` at the real (unpadded) mean lengths of ``rows``
    (``flops_per_token``): padding is waste, not work, so it is never counted. An encoder-decoder's cost
    per target token depends on its source and target lengths apart, split at each row's first SEP; a
    prefix LM computes every position of its rows but learns only from the target after the SEP."""
    length = float(np.mean([len(r) for r in rows]))
    if not (model.is_encoder_decoder or model.config.prefix_lm):
        return flops_per_token(model, round(length))
    sep = model.config.sep_token_id
    cuts = [r.index(sep) for r in rows]
    src = float(np.mean(cuts))
    tgt = float(np.mean([len(r) - c - 1 for r, c in zip(rows, cuts)]))
    if model.is_encoder_decoder:
        return flops_per_token(model, src_len=round(src), tgt_len=round(tgt))
    return flops_per_token(model, round(length)) * length / tgt


def training_report(
    courses: dict[str, CourseModel], histories: dict[str, History], matmul_peak: float | None = None
) -> pd.DataFrame:
    """One row per trained model: steps, tokens, time, tokens/s, the share of ``matmul_peak`` (FLOP/s, as
    ``course.sweep.matmul_flops_per_s`` measures it) its training FLOPs reach, and whether its
    validation curve flattened (fell by less than ``FLAT`` over the last quarter of its steps).
    """
    rows = {}
    for name, history in histories.items():
        last = history[-1]
        gain = last_quarter_improvement(history)
        flops_per_s = (
            flops_per_supervised_token(courses[name].model, courses[name].data["train"]["input_ids"])
            * last["supervised_tokens"]
            / last["wall_time"]
        )
        rows[name] = {
            "steps": last["step"],
            "tokens": last["tokens"],
            "train time (min)": last["wall_time"] / 60,
            "tokens/s": last["tokens"] / last["wall_time"],
            "of matmul peak": flops_per_s / matmul_peak if matmul_peak else math.nan,
            "best val loss": history.best_val_loss(),
            "last-quarter fall": gain,
            "flattened": "unknown"
            if math.isnan(gain)
            else ("yes" if flattened(history) else "NO: train longer"),
        }
    return pd.DataFrame(rows).T


def curves_metrics(histories: dict[str, History]) -> dict:
    """What a results file stores about training: ``curves[<model>] = [[step, val_loss], ...]`` and each
    model's last-quarter fall of the validation loss."""
    return {
        "curves": {name: curve(h) for name, h in histories.items()},
        "last_quarter_improvement": {name: last_quarter_improvement(h) for name, h in histories.items()},
    }


def flattening_line(report: pd.DataFrame, name: str) -> str:
    """The sentence a notebook's findings start with: model ``name``'s steps and last-quarter fall from
    ``training_report``, and whether the numbers that follow rest on a flattened curve."""
    row = report.loc[name]
    verdict = (
        "flattened" if row["flattened"] == "yes" else "NOT flattened: the numbers below are undertrained"
    )
    return (
        f"- Training: {row['steps']} steps; the validation loss fell {row['last-quarter fall']:.1%} over the "
        f"last quarter ({verdict})."
    )
