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

# A ladder entry is a MODEL_PRESETS name ("tiny") or a dict with a "name" and the sizes to override.
SizeSpec = str | dict


def size_name(size: SizeSpec) -> str:
    """The label of a ladder entry: the preset name, or the dict's ``name``."""
    if isinstance(size, str):
        return size
    if "name" not in size:
        raise ValueError(f"an explicit ladder size needs a 'name' (used in checkpoint names), got {size!r}")
    return size["name"]


def size_overrides(size: SizeSpec) -> tuple[str, dict]:
    """(MODEL_PRESETS name to start from, overrides) for ``build_model``.

    ``"mini"`` -> ("mini", {}); ``{"name": "w96", "d_model": 96, "n_layers": 2, "n_heads": 4}``
    -> ("tiny", {"d_model": 96, ...}): an explicit size overrides every field of the
    ``base`` preset it names (default ``tiny``), so any (d_model, n_layers, n_heads) works.
    """
    if isinstance(size, str):
        return size, {}
    extra = {k: v for k, v in size.items() if k not in ("name", "base")}
    return size.get("base", "tiny"), extra


def training_flops(model, supervised_tokens: float, src_len: float, tgt_len: float) -> float:
    """Training FLOPs of an encoder-decoder run: FLOPs per target token x target tokens seen.

    ``model.flops_per_token(src_len=S, tgt_len=T)`` (forward + backward, per predicted
    token) is evaluated at the *mean* source and target lengths of the training rows,
    then multiplied by the supervised (target) tokens the trainer counted. Using means
    is an approximation: attention's S^2 term is convex in S, so long dialogues cost a
    little more than the mean suggests; padding is not counted (it is wasted work, not
    model FLOPs).
    """
    if supervised_tokens < 0:
        raise ValueError(f"supervised_tokens must be >= 0, got {supervised_tokens}")
    s, t = max(1, round(src_len)), max(1, round(tgt_len))
    return float(model.flops_per_token(src_len=s, tgt_len=t)) * float(supervised_tokens)


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
    curves = samples[:, :1] + samples[:, 1:2] * np.power(n_grid[None, :], -samples[:, 2:3])  # (draws, grid)
    low, high = np.nanquantile(curves, quantiles, axis=0)
    return curve, low, high


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
