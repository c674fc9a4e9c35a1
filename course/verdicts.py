"""Predictions judged against measurements: a predicted range holds only when every seed's measurement
lies inside it, fails only when none does, and otherwise the run cannot decide.

A verdict written by hand drifts from the numbers beside it; these functions compute it from them, so
a notebook's conclusion changes when its run does.
"""

from __future__ import annotations

import pandas as pd

# What a seed-dependent verdict from a single seed must say about itself.
ONE_SEED = " (one seed: no noise estimate, the run cannot show this is not noise)"


def range_verdict(values: list[float], low: float, high: float) -> str:
    """``holds`` when every value (one per seed) lies in [low, high], ``fails`` when none does,
    otherwise ``cannot decide: seeds disagree``."""
    if not values:
        raise ValueError("a verdict needs at least one measured value")
    inside = [low <= v <= high for v in values]
    return "holds" if all(inside) else "fails" if not any(inside) else "cannot decide: seeds disagree"


def prediction_table(
    predictions: dict[str, tuple[str, tuple[float, float]]],
    measured: dict[str, float],
    by_seed: dict[str, list[float]],
) -> pd.DataFrame:
    """One row per prediction ``name -> (what, (low, high))``: the predicted range, the measured value
    (``measured[name]``, a mean over seeds where ``by_seed`` has several), the seeds' range, the verdict
    (``range_verdict`` over the seeds' values; a seed-dependent one from a single seed says so) and
    whether the measurement exceeds 1 (the predicted direction for a ratio such as "enc-dec / dec-only
    is worse, slower, bigger")."""
    rows = []
    for name, (what, (low, high)) in predictions.items():
        seen = by_seed.get(name, [measured[name]])
        rows.append(
            {
                "prediction": what,
                "predicted": f"{low:g}–{high:g}×",
                "measured": round(measured[name], 2),
                "seed range": f"{min(seen):.2f}–{max(seen):.2f}" if len(seen) > 1 else "one value",
                "verdict": range_verdict(seen, low, high)
                + (ONE_SEED if name in by_seed and len(seen) == 1 else ""),
                "direction (enc-dec worse/slower/bigger)": "yes" if measured[name] > 1 else "no",
            }
        )
    return pd.DataFrame(rows)
