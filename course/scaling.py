"""Exp 4 helpers: scaling ladders, training FLOPs, power-law fits and gains per doubling.

The law fitted is Kaplan et al. (2020)'s loss-versus-parameters curve with an
irreducible term (Hoffmann et al. 2022):

    L(N) = E + A * N ** (-alpha)

``E`` is the loss no model size can beat (the data's own entropy under this
tokenizer, plus whatever the training budget cannot remove), ``A`` and ``alpha``
say how fast the reducible part shrinks. Three parameters need at least four
distinct sizes to be constrained; with fewer, ``fit_power_law`` fixes ``E`` and
says so instead of returning a fit that only looks precise.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from course.accounting import flops_per_token, num_parameters
from course.evaluation import DISTINCT_FLOOR, score_summaries
from course.report import last_quarter_improvement
from reftx_lib.train.evaluation import evaluate_loss

# A ladder entry is a MODEL_SIZES name ("tiny") or a dict with a "name" and the sizes to override.
SizeSpec = str | dict


def size_name(size: SizeSpec) -> str:
    """The label of a ladder entry: the size name, or the dict's ``name``."""
    if isinstance(size, str):
        return size
    if "name" not in size:
        raise ValueError(f"an explicit ladder size needs a 'name' (used in checkpoint names), got {size!r}")
    return size["name"]


def size_overrides(size: SizeSpec) -> tuple[str, dict]:
    """(MODEL_SIZES name to start from, overrides) for ``build_model``.

    ``"mini"`` -> ("mini", {}); ``{"name": "w96", "d_model": 96, "n_layers": 2, "n_heads": 4}``
    -> ("tiny", {"d_model": 96, ...}): an explicit size overrides every field of the
    ``base`` size it names (default ``tiny``), so any (d_model, n_layers, n_heads) works.
    """
    if isinstance(size, str):
        return size, {}
    extra = {k: v for k, v in size.items() if k not in ("name", "base")}
    return size.get("base", "tiny"), extra


def training_flops(model, supervised_tokens: float, src_len: float, tgt_len: float) -> float:
    """Training FLOPs of an encoder-decoder run: FLOPs per target token x target tokens seen.

    ``flops_per_token(model, src_len=S, tgt_len=T)`` (forward + backward, per predicted
    token) is evaluated at the *mean* source and target lengths of the training rows,
    then multiplied by the supervised (target) tokens the trainer counted. Using means
    is an approximation: attention's S^2 term is convex in S, so long dialogues cost a
    little more than the mean suggests; padding is not counted (it is wasted work, not
    model FLOPs).
    """
    if supervised_tokens < 0:
        raise ValueError(f"supervised_tokens must be >= 0, got {supervised_tokens}")
    s, t = max(1, round(src_len)), max(1, round(tgt_len))
    return float(flops_per_token(model, src_len=s, tgt_len=t)) * float(supervised_tokens)


def _law(n, e, a, alpha):
    return e + a * np.power(n, -alpha)


def fit_power_law(n, loss, e_fixed: float | None = None, n_samples: int = 2000, seed: int = 0) -> dict:
    """Fit ``L(N) = E + A * N^-alpha`` to (parameters, loss) points; replicates (seeds) are welcome.

    With >= 4 distinct N (and ``e_fixed`` None) all three parameters are fitted by
    ``scipy.optimize.curve_fit``; ``cov`` is its covariance, ``alpha_std`` the
    standard error of alpha. With 2 or 3 distinct N three parameters are not
    constrained, so ``E`` is fixed (``e_fixed``, default 0) and ``log(L - E)`` is
    fitted linearly in ``log N``: with E = 0 the exponent is the local log-log slope,
    a *lower bound* on the alpha a free E would give. ``constrained`` says which
    case happened and ``note`` says it in words. Fewer than 2 distinct sizes raise.

    Returns E, A, alpha, alpha_std, cov (3x3 over E, A, alpha; zeros for fixed
    entries), params_std, method, constrained, n_points, n_sizes, dof, rmse, note,
    and ``samples`` (draws of (E, A, alpha) from the fit's Gaussian, for bands;
    empty when the covariance is undefined).
    """
    n = np.asarray(n, dtype=float).ravel()
    loss = np.asarray(loss, dtype=float).ravel()
    if n.shape != loss.shape:
        raise ValueError(f"n and loss must pair up, got {n.size} sizes and {loss.size} losses")
    keep = np.isfinite(n) & np.isfinite(loss)
    n, loss = n[keep], loss[keep]
    if np.any(n <= 0):
        raise ValueError("parameter counts must be positive")
    sizes = np.unique(n)
    if sizes.size < 2:
        raise ValueError(
            f"a power law needs at least 2 distinct model sizes, got {sizes.size} "
            f"({n.size} finite point(s)); add sizes to the ladder"
        )
    rng = np.random.default_rng(seed)
    n0 = float(
        np.exp(np.mean(np.log(sizes)))
    )  # fit in N / n0: keeps A of order 1 and the problem well scaled
    x = n / n0
    if sizes.size >= 4 and e_fixed is None:
        result = _fit_free(x, loss)
        method = "E + A*N^-alpha, all three fitted (scipy curve_fit)"
        note = (
            f"{sizes.size} distinct sizes, {n.size} points: the three parameters are fitted; "
            "alpha_std is curve_fit's standard error"
        )
    else:
        e = 0.0 if e_fixed is None else float(e_fixed)
        if np.any(loss <= e):
            raise ValueError(f"every loss must exceed the fixed E={e} to fit log(L - E)")
        result = _fit_fixed_e(x, loss, e)
        method = f"A*N^-alpha + E with E fixed at {e:g} (log-log least squares)"
        why = (
            f"only {sizes.size} distinct sizes: E + A*N^-alpha is not constrained, so E is fixed at {e:g}"
            if e_fixed is None
            else f"E fixed at {e:g} by the caller"
        )
        note = why + (
            "; with E = 0 alpha is the local log-log slope, a lower bound on the true exponent"
            if e == 0
            else ""
        )
        if result["dof"] == 0:
            note += "; no residual degrees of freedom, so alpha has no error bar (alpha_std = nan)"
    e, a_scaled, alpha = result["params"]
    cov_scaled = result["cov"]
    # Undo the scaling N -> N / n0: A = A' * n0^alpha; propagate to the covariance (delta method).
    a = a_scaled * n0**alpha
    jac = np.array([[1.0, 0.0, 0.0], [0.0, n0**alpha, a_scaled * n0**alpha * math.log(n0)], [0.0, 0.0, 1.0]])
    cov = jac @ cov_scaled @ jac.T if np.all(np.isfinite(cov_scaled)) else np.full((3, 3), np.nan)
    samples = np.empty((0, 3))
    if np.all(np.isfinite(cov_scaled)) and np.any(np.diag(cov_scaled) > 0):
        draws = rng.multivariate_normal(
            [e, a_scaled, alpha], cov_scaled, size=n_samples, check_valid="ignore"
        )
        draws[:, 1] = draws[:, 1] * n0 ** draws[:, 2]
        samples = draws
    pred = _law(n, e, a, alpha)
    stds = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(3, np.nan)
    return {
        "E": float(e),
        "A": float(a),
        "alpha": float(alpha),
        "alpha_std": float(stds[2]),
        "E_std": float(stds[0]),
        "A_std": float(stds[1]),
        "cov": cov.tolist(),
        "method": method,
        "constrained": bool(sizes.size >= 4 and e_fixed is None),
        "n_points": int(n.size),
        "n_sizes": int(sizes.size),
        "dof": int(result["dof"]),
        "rmse": float(np.sqrt(np.mean((loss - pred) ** 2))),
        "note": note,
        "samples": samples,
    }


def _fit_free(x: np.ndarray, loss: np.ndarray) -> dict:
    from scipy.optimize import OptimizeWarning, curve_fit

    # Start from the E = 0.9 * min(loss) log-log line: close enough for curve_fit to converge.
    e0 = 0.9 * float(loss.min())
    slope, intercept = np.polyfit(np.log(x), np.log(loss - e0), 1)
    p0 = [e0, math.exp(intercept), max(1e-3, -slope)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        params, cov = curve_fit(
            _law, x, loss, p0=p0, bounds=([0.0, 1e-12, 1e-4], [float(loss.min()), np.inf, 5.0]), maxfev=20000
        )
    dof = x.size - 3
    if dof <= 0:
        cov = np.full((3, 3), np.nan)
    return {"params": params, "cov": np.asarray(cov), "dof": dof}


def _fit_fixed_e(x: np.ndarray, loss: np.ndarray, e: float) -> dict:
    """log(L - E) = log A - alpha log N by ordinary least squares, with its covariance."""
    design = np.column_stack([np.ones_like(x), np.log(x)])  # (n, 2)
    y = np.log(loss - e)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = x.size - 2
    cov = np.full((3, 3), np.nan)
    if dof > 0:
        s2 = float(np.sum((y - design @ coef) ** 2)) / dof
        cov_lin = s2 * np.linalg.inv(design.T @ design)  # over (log A, -alpha)
        a = math.exp(coef[0])
        jac = np.array([[a, 0.0], [0.0, -1.0]])  # d(A, alpha) / d(log A, slope)
        cov = np.zeros((3, 3))
        cov[1:, 1:] = jac @ cov_lin @ jac.T
    return {"params": np.array([e, math.exp(coef[0]), -coef[1]]), "cov": cov, "dof": dof}


def power_law_band(fit: dict, n_grid, quantiles=(0.16, 0.84)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted curve on ``n_grid`` and a band (default 68 %) from the fit's parameter samples.

    Without samples (undefined covariance) the band collapses onto the curve.
    """
    n_grid = np.asarray(n_grid, dtype=float)
    curve = _law(n_grid, fit["E"], fit["A"], fit["alpha"])
    samples = np.asarray(fit.get("samples", []), dtype=float).reshape(-1, 3)
    if samples.shape[0] == 0:
        return curve, curve.copy(), curve.copy()
    samples = samples[samples[:, 1] > 0]  # a draw with A <= 0 is no power law (a Gaussian's tail)
    with np.errstate(over="ignore", invalid="ignore"):
        curves = samples[:, :1] + samples[:, 1:2] * np.power(
            n_grid[None, :], -samples[:, 2:3]
        )  # (draws, grid)
    curves[~np.isfinite(curves)] = np.nan
    low, high = np.nanquantile(curves, quantiles, axis=0)
    return curve, low, high


def alpha_interval(fit: dict, level: float = 0.95) -> tuple[float, float]:
    """The ``level`` confidence interval of the exponent: alpha -/+ Student's t(dof) x its standard error
    (NaN, NaN without an error bar). When it includes 0, the runs measured no scaling at all."""
    from scipy.stats import t

    if fit["dof"] < 1 or not math.isfinite(fit["alpha_std"]):
        return math.nan, math.nan
    half = float(t.ppf(0.5 + level / 2, fit["dof"])) * fit["alpha_std"]
    return fit["alpha"] - half, fit["alpha"] + half


def predict(fit: dict, n) -> np.ndarray:
    """L(N) from a fit."""
    return _law(np.asarray(n, dtype=float), fit["E"], fit["A"], fit["alpha"])


def gain_per_doubling(n, values, lower_is_better: bool = True) -> list[dict]:
    """Improvement per doubling of N between consecutive sizes (means over replicates).

    For each pair of neighbouring distinct sizes: ``doublings = log2(N_hi / N_lo)`` and
    ``gain = (v_lo - v_hi) / doublings`` for a loss (``lower_is_better``), or
    ``(v_hi - v_lo) / doublings`` for a score such as ROUGE. Diminishing returns show
    up as gains that shrink from one pair to the next.
    """
    n = np.asarray(n, dtype=float).ravel()
    values = np.asarray(values, dtype=float).ravel()
    if n.shape != values.shape:
        raise ValueError(f"n and values must pair up, got {n.size} and {values.size}")
    sizes = np.unique(n)
    if sizes.size < 2:
        raise ValueError("gain per doubling needs at least 2 distinct sizes")
    means = np.array([np.nanmean(values[n == s]) for s in sizes])
    out = []
    for (n_lo, v_lo), (n_hi, v_hi) in zip(zip(sizes, means), zip(sizes[1:], means[1:])):
        doublings = math.log2(n_hi / n_lo)
        delta = (v_lo - v_hi) if lower_is_better else (v_hi - v_lo)
        out.append(
            {
                "n_from": int(n_lo),
                "n_to": int(n_hi),
                "n_mid": float(math.sqrt(n_lo * n_hi)),
                "doublings": doublings,
                "gain": float(delta),
                "gain_per_doubling": float(delta / doublings),
            }
        )
    return out


def fit_gain_per_doubling(fit: dict, n) -> np.ndarray:
    """The law's own loss drop from N to 2N: A * N^-alpha * (1 - 2^-alpha)."""
    n = np.asarray(n, dtype=float)
    return fit["A"] * np.power(n, -fit["alpha"]) * (1 - 2.0 ** -fit["alpha"])


def fit_summary(fit: dict) -> dict:
    """The fit without its parameter samples and with NaN as None: ready for ``run.save``."""

    def clean(value):
        if isinstance(value, float):
            return None if not math.isfinite(value) else value
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {k: clean(v) for k, v in fit.items() if k != "samples"}


def size_table(models: dict[str, object], src_len: float, tgt_len: float) -> pd.DataFrame:
    """One row per ladder size: its shape, total and non-embedding parameters, and training FLOPs per
    summary token at the data's mean source and target lengths (the x axes of every Exp 4 plot)."""
    rows = {}
    for name, model in models.items():
        counts, c = num_parameters(model), model.config
        rows[name] = {
            "d_model": c.d_model,
            "n_layers": c.n_layers,
            "n_heads": c.n_heads,
            "params_total": counts["total"],
            "params_non_embedding": counts["non_embedding"],
            "flops_per_token": training_flops(model, 1, src_len, tgt_len),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("size")


def run_measures(
    model,
    history,
    data,
    test,
    tokenizer,
    cfg: dict,
    device,
    src_len: float,
    tgt_len: float,
    epoch_tokens: int,
) -> dict:
    """Everything Exp 4 records about one trained size and seed.

    The best validation loss comes from training; the final model's training and validation losses are
    measured here in eval mode on equally many batches (the data-limitation check compares them, and
    training-time losses would mix in dropout); ROUGE and a sample come from ``score_summaries``;
    FLOPs are ``training_flops`` over the supervised tokens the trainer counted, and epochs count them
    against ``epoch_tokens`` (the training split's supervised tokens).
    """
    batches = cfg["eval_batches"] or 50
    final = {
        split: evaluate_loss(
            model, data[split]["input_ids"], cfg["batch_tokens"], device, max_batches=batches
        )
        for split in ("train", "validation")
    }
    scores = score_summaries(model, test, tokenizer, cfg["num_beams"], cfg["max_new_tokens"], device)
    seen = history[-1]["supervised_tokens"]
    counts = num_parameters(model)
    return {
        "params_total": counts["total"],
        "params_non_embedding": counts["non_embedding"],
        "flops": training_flops(model, seen, src_len, tgt_len),
        "supervised_tokens": seen,
        "epochs": seen / epoch_tokens,
        "best_val_loss": history.best_val_loss(),
        "best_val_ppl": math.exp(history.best_val_loss()),
        "final_train_loss": final["train"]["loss"],
        "final_val_loss": final["validation"]["loss"],
        **scores,
        "train_time_s": history[-1]["wall_time"],
        "last_quarter_fall": last_quarter_improvement(history),
    }


SIZE_METRICS = (
    "best_val_loss",
    "best_val_ppl",
    "rouge1",
    "rouge2",
    "rougeL",
    "distinct_share",
    "final_train_loss",
    "final_val_loss",
)


def per_size(runs: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds per size (in ladder order), ``<metric>_std`` their spread, and ``gap``: final
    validation minus final training loss (the data-limitation check)."""
    by_size = runs.groupby("size", sort=False)
    fixed = ["params_total", "params_non_embedding", "flops", "train_time_s", "supervised_tokens", "epochs"]
    table = by_size[fixed].mean().join(by_size[list(SIZE_METRICS)].mean())
    table = table.join(by_size[list(SIZE_METRICS)].std(ddof=1).add_suffix("_std"))
    table["gap"] = table["final_val_loss"] - table["final_train_loss"]
    return table


def rouge_by_size_report(
    table: pd.DataFrame, longest3: dict, published: dict, distinct_floor: float = DISTINCT_FLOOR
) -> str:
    """Each size's test ROUGE-1 against LONGEST-3 and the published Transformer, beside its share of
    distinct summaries, and the best size among those that mostly write distinct summaries.

    ``table`` is ``per_size``'s. A size whose summaries are mostly repeats (``distinct_share`` below
    ``distinct_floor``) is named and left out of "best": one generic sentence can outscore a model that
    reads the dialogues, so ROUGE cannot rank it.
    """
    lines = []
    for name, row in table.iterrows():
        lines.append(
            f"{name:>7}: ROUGE-1 {row['rouge1']:.1f} ± {row['rouge1_std']:.1f} "
            f"({row['rouge1'] - longest3['rouge1']:+.1f} vs LONGEST-3, "
            f"{row['rouge1'] - published['rouge1']:+.1f} vs the published Transformer), "
            f"{row['distinct_share']:.0%} distinct summaries"
        )
    repeats = table[table["distinct_share"] < distinct_floor]
    readers = table.drop(index=repeats.index)
    if len(repeats):
        lines.append(
            f"{', '.join(repeats.index)}: fewer than {distinct_floor:.0%} of the summaries are distinct, so "
            "much of the ROUGE-1 scores generic sentences, not readings of the dialogues; ROUGE cannot rank "
            "these sizes."
        )
    best = (
        f"{readers['rouge1'].idxmax()} ({readers['rouge1'].max():.1f})"
        if len(readers)
        else "none (every size repeats its summaries)"
    )
    beats = [
        n + (" (repeats its summaries)" if n in repeats.index else "")
        for n, row in table.iterrows()
        if row["rouge1"] > longest3["rouge1"]
    ]
    lines.append(
        f"Best ROUGE-1 among the sizes whose summaries are mostly distinct: {best}. Sizes above LONGEST-3 "
        f"on ROUGE-1: {', '.join(beats) if beats else 'none'}."
    )
    return "\n".join(lines)


def scaling_verdict(fit: dict) -> str:
    """The one decision Exp 4 stores: was scaling measured (the 95% interval of alpha lies above 0)?"""
    lo, hi = alpha_interval(fit)
    if not math.isfinite(lo):
        return "cannot decide: no interval for alpha"
    if lo <= 0 <= hi:
        return "no scaling measured: the 95% interval of alpha includes 0"
    return "scaling measured" if lo > 0 else "loss grows with size: alpha is below 0"


def fit_report(fit: dict, table: pd.DataFrame, kaplan_alpha: float = 0.076) -> str:
    """The fit in sentences: the exponent with its 95% interval (and "no scaling measured" when the
    interval includes 0), the loss drop across the ladder against the seed spread, and the checks
    that say whether the law is constrained at all."""
    lo, hi = alpha_interval(fit)
    smallest = table["params_non_embedding"].idxmin()
    largest = table["params_non_embedding"].idxmax()
    drop = table.loc[smallest, "best_val_loss"] - table.loc[largest, "best_val_loss"]
    ratio = table.loc[largest, "params_non_embedding"] / table.loc[smallest, "params_non_embedding"]
    spread = float(table["best_val_loss_std"].mean())
    lines = [
        f"fit: {fit['method']}",
        f"     {fit['note']}",
        f"alpha = {fit['alpha']:.3f} (95% interval {lo:.3f} to {hi:.3f}), E = {fit['E']:.3f}, "
        f"A = {fit['A']:.3g}; {fit['n_points']} runs at {fit['n_sizes']} sizes, rmse {fit['rmse']:.3f} nats",
    ]
    if not math.isfinite(lo):
        lines.append("No interval (no residual degrees of freedom): these runs do not measure an exponent.")
    elif lo <= 0 <= hi:
        lines.append("The interval of alpha includes 0: no scaling was measured at this budget.")
    else:
        lines.append(
            "Scaling measured: alpha is above 0 at 95% confidence; Kaplan et al. report about "
            f"{kaplan_alpha} for converged large language models, ours is "
            f"{fit['alpha'] / kaplan_alpha:.1f}x that"
            + (" (a lower bound: E fixed at 0)." if not fit["constrained"] else ".")
        )
    lines.append(
        f"From {smallest} to {largest} ({ratio:.0f}x the non-embedding parameters) the validation loss "
        f"falls by {drop:.3f} nats (perplexity {table.loc[smallest, 'best_val_ppl']:.1f} -> "
        f"{table.loc[largest, 'best_val_ppl']:.1f}); the seed-to-seed spread is about {spread:.3f} nats, "
        f"so the size effect is {drop / max(spread, 1e-9):.0f}x the noise."
    )
    if fit["rmse"] > spread:
        lines.append(
            f"The fit misses its own points by more than the seed spread (rmse {fit['rmse']:.3f} = "
            f"{fit['rmse'] / max(spread, 1e-9):.1f}x {spread:.3f} nats): a power law does not describe these "
            "sizes within the noise, so read alpha as a summary of the trend, not as a law."
        )
    if fit["constrained"] and (fit["E"] <= 1e-6 or fit["E"] >= table["best_val_loss"].min() - 1e-6):
        lines.append(
            f"The fitted floor sits at the edge of its allowed range (E = {fit['E']:.3f}): the points do not "
            "bend towards a floor, so E and alpha trade off freely."
        )
    return "\n".join(lines)


def loss_vs_compute(histories: dict[tuple[str, int], object], flops_per_token: dict[str, float]) -> dict:
    """Each size's validation curve (mean over its seeds, step by step) against the training FLOPs spent
    so far: ``{size: DataFrame(flops, loss)}``, from histories keyed ``(size, seed)``."""
    curves = {}
    for name, fpt in flops_per_token.items():
        frames = [
            pd.DataFrame(h.evals())[["step", "val_loss", "supervised_tokens"]]
            for (size, _), h in histories.items()
            if size == name
        ]
        ev = pd.concat(frames).groupby("step").mean()
        curves[name] = pd.DataFrame({"flops": ev["supervised_tokens"] * fpt, "loss": ev["val_loss"]})
    return curves


def compute_frontier(curves: dict[str, pd.DataFrame], points: int = 200) -> tuple[pd.Series, list[tuple]]:
    """The compute frontier: for each budget (log-spaced FLOPs over the curves' range), the lowest loss any
    size reached there (log-interpolated), and ``(size, from, to)`` segments naming the best size per budget.
    Budgets that no curve covers are left out."""
    lo = min(c["flops"].min() for c in curves.values())
    hi = max(c["flops"].max() for c in curves.values())
    grid = np.geomspace(lo, hi, points)
    table = pd.DataFrame(index=grid, columns=list(curves), dtype=float)
    for name, c in curves.items():
        inside = (grid >= c["flops"].min()) & (grid <= c["flops"].max())
        table.loc[inside, name] = np.interp(np.log(grid[inside]), np.log(c["flops"]), c["loss"])
    table = table.dropna(how="all")
    segments: list[list] = []
    for budget, name in table.idxmin(axis=1).items():
        if not segments or segments[-1][0] != name:
            segments.append([name, budget, budget])
        segments[-1][2] = budget
    return table.min(axis=1), [tuple(s) for s in segments]


def returns_report(
    loss_gains: list[dict], rouge_gains: list[dict], labels: list[str], table: pd.DataFrame
) -> str:
    """Gain per doubling between neighbouring sizes, whether it shrinks (diminishing returns) or grows,
    and the data-limitation check: epochs seen and how the train/validation gap changes with size."""
    lines = [
        f"{label:>14}: {lg['doublings']:.1f} doublings, loss -{lg['gain_per_doubling']:.3f} and ROUGE-1 "
        f"{rg['gain_per_doubling']:+.2f} per doubling"
        for label, lg, rg in zip(labels, loss_gains, rouge_gains)
    ]
    if len(loss_gains) < 2:
        lines.append("Only one interval between sizes: the trend of the gain per doubling needs three sizes.")
    else:
        first, last = loss_gains[0]["gain_per_doubling"], loss_gains[-1]["gain_per_doubling"]
        lines.append(
            f"The loss gain per doubling {'shrinks' if last < first else 'grows'} from {first:.3f} to "
            f"{last:.3f} nats across the ladder ({last / first:.0%} of the first interval's gain)"
            + (
                ": diminishing returns, as a power law predicts."
                if last < first
                else ": returns *increase* with size, the opposite of a power law's diminishing returns. "
                "Bigger models learn more per step, so at a fixed budget the gap between sizes can still "
                "be opening; the law describes models trained close to their capacity."
            )
        )
    smallest = table["params_non_embedding"].idxmin()
    largest = table["params_non_embedding"].idxmax()
    gap_small, gap_large = table.loc[smallest, "gap"], table.loc[largest, "gap"]
    epochs = float(table["epochs"].mean())
    lines.append(
        f"Each run saw {epochs:.2f} epochs of SAMSum's summaries. Validation minus training loss: "
        f"{gap_small:+.3f} ({smallest}) ... {gap_large:+.3f} ({largest}); part of any gap is just the two "
        "subsets being different dialogues, so what matters is whether it grows with size."
    )
    if epochs < 1 or gap_large - gap_small < 0.1:
        why = (
            "no run saw a full epoch"
            if epochs < 1
            else f"the gap grows by only {gap_large - gap_small:+.3f} nats (under 0.1) with size"
        )
        lines.append(
            f"No size is data-limited at this budget ({why}), so any flattening comes from the budget of "
            "steps, not from running out of data."
        )
    else:
        lines.append(
            f"The gap grows by {gap_large - gap_small:.2f} nats from {smallest} to {largest}: after "
            f"{epochs:.0f} epochs the bigger models memorize SAMSum, so part of their extra capacity goes "
            "to the training set and the law flattens: data-limited."
        )
    return "\n".join(lines)
