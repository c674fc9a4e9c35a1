"""What every notebook reports about the models it trained: has each validation curve flattened, how fast
did it train, and how much of this CPU's matrix-multiply rate that speed is.

Every number of the ``full`` budget rests on models trained until their curves flatten
(``reftx_lib.train.trainer.FLAT``), so each notebook prints this table for every model it trains,
and its results file stores the curves (``curves_metrics``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from course.experiments import CourseModel
from reftx_lib.train.trainer import History


def flops_per_supervised_token(course: CourseModel) -> float:
    """Training FLOPs per supervised token at the training rows' mean lengths (``flops_per_token``)."""
    model, train = course.model, course.data["train"]
    if "source_len" in train.column_names and hasattr(model, "encoder"):
        return model.flops_per_token(
            src_len=round(float(np.mean(train["source_len"][:]))),
            tgt_len=round(float(np.mean(train["target_len"][:]))),
        )
    lengths = [len(r) for r in train["input_ids"]]
    return model.flops_per_token(round(float(np.mean(lengths))))


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
        gain = history.last_quarter_improvement()
        flops_per_s = (
            flops_per_supervised_token(courses[name]) * last["supervised_tokens"] / last["wall_time"]
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
            else ("yes" if history.flattened() else "NO: train longer"),
        }
    return pd.DataFrame(rows).T


def curves_metrics(histories: dict[str, History]) -> dict:
    """What a results file stores about training: ``curves[<model>] = [[step, val_loss], ...]`` and each
    model's last-quarter fall of the validation loss."""
    return {
        "curves": {name: h.curve() for name, h in histories.items()},
        "last_quarter_improvement": {name: h.last_quarter_improvement() for name, h in histories.items()},
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
