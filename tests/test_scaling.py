"""Exp 4 helpers: power-law fits recover known exponents, degrade honestly, and FLOPs add up."""

import math

import numpy as np
import pytest

from course.accounting import flops_per_token
from course.scaling import (
    fit_gain_per_doubling,
    fit_power_law,
    gain_per_doubling,
    power_law_band,
    predict,
    size_name,
    size_overrides,
    training_flops,
)
from reftx_lib import ReferenceTransformer


def synthetic(n, e=1.8, a=40.0, alpha=0.3, noise=0.0, seeds=1, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    n = np.repeat(np.asarray(n, dtype=float), seeds)
    return n, e + a * n**-alpha + noise * rng.standard_normal(n.size)


@pytest.mark.parametrize("alpha", [0.076, 0.3, 0.7])
def test_recovers_known_exponent_without_noise(alpha):
    n, loss = synthetic(np.geomspace(1e4, 1e8, 8), a=40.0 * 1e4**alpha / 40.0 * 3, alpha=alpha)
    fit = fit_power_law(n, loss)
    assert fit["constrained"] and fit["n_sizes"] == 8
    assert fit["alpha"] == pytest.approx(alpha, rel=1e-3)
    assert fit["E"] == pytest.approx(1.8, abs=1e-3)
    assert fit["rmse"] < 1e-6


def test_noisy_fit_covers_truth_and_has_error_bar():
    n, loss = synthetic(np.geomspace(3e4, 1e8, 6), noise=0.01, seeds=3)
    fit = fit_power_law(n, loss)
    assert fit["dof"] == 18 - 3
    assert 0 < fit["alpha_std"] < 0.2
    assert abs(fit["alpha"] - 0.3) < 3 * fit["alpha_std"] + 0.02
    curve, low, high = power_law_band(fit, np.geomspace(3e4, 1e8, 20))
    assert np.all(low <= curve + 1e-9) and np.all(curve <= high + 1e-9)
    assert np.all(high > low)


def test_three_sizes_fix_e_and_say_so():
    n, loss = synthetic([1e4, 1e5, 1e6], e=0.0, alpha=0.25, seeds=2, noise=0.005)
    fit = fit_power_law(n, loss)
    assert not fit["constrained"] and fit["E"] == 0.0
    assert "not constrained" in fit["note"]
    assert fit["alpha"] == pytest.approx(0.25, abs=0.02)
    assert np.isfinite(fit["alpha_std"])


def test_e_fixed_slope_is_lower_bound_when_e_is_positive():
    n, loss = synthetic([1e4, 1e5, 1e6], e=2.0, alpha=0.3)
    assert fit_power_law(n, loss)["alpha"] < 0.3


def test_two_sizes_without_replicates_give_exponent_but_no_error_bar():
    n, loss = synthetic([1e4, 1e6], e=0.0, alpha=0.5)
    fit = fit_power_law(n, loss)
    assert fit["alpha"] == pytest.approx(0.5, rel=1e-6)
    assert fit["dof"] == 0 and math.isnan(fit["alpha_std"])
    assert "no error bar" in fit["note"]
    curve, low, high = power_law_band(fit, [1e4, 1e5])
    assert np.allclose(curve, low) and np.allclose(curve, high)


@pytest.mark.parametrize("n,loss", [([1e5], [3.0]), ([1e5, 1e5, 1e5], [3.0, 3.1, 2.9]), ([], [])])
def test_too_few_sizes_fail_cleanly(n, loss):
    with pytest.raises(ValueError, match="at least 2 distinct"):
        fit_power_law(n, loss)


def test_mismatched_inputs_raise():
    with pytest.raises(ValueError, match="pair up"):
        fit_power_law([1, 2, 3], [1.0, 2.0])


def test_gain_per_doubling_constant_for_log_linear_values():
    n = [1e4, 2e4, 8e4]
    loss = [5.0, 4.9, 4.7]  # 0.1 per doubling everywhere
    gains = gain_per_doubling(n, loss)
    assert [g["doublings"] for g in gains] == pytest.approx([1.0, 2.0])
    assert [g["gain_per_doubling"] for g in gains] == pytest.approx([0.1, 0.1])
    rouge = gain_per_doubling(n, [20.0, 21.0, 23.0], lower_is_better=False)
    assert [g["gain_per_doubling"] for g in rouge] == pytest.approx([1.0, 1.0])


def test_gain_per_doubling_averages_replicates_and_matches_the_law():
    n, loss = synthetic([1e4, 2e4], seeds=3, noise=0.0)
    (gain,) = gain_per_doubling(n, loss)
    fit = {"E": 1.8, "A": 40.0, "alpha": 0.3}
    assert gain["gain"] == pytest.approx(float(fit_gain_per_doubling(fit, 1e4)))
    assert predict(fit, 1e4) == pytest.approx(1.8 + 40.0 * 1e4**-0.3)


def test_training_flops_is_per_token_times_tokens():
    model = ReferenceTransformer(vocab_size=50, d_model=32, n_layers=1, n_heads=2)  # tiny: d 32, 1 layer
    per_token = flops_per_token(model, src_len=20, tgt_len=5)
    assert training_flops(model, 1000, 20.2, 4.8) == pytest.approx(per_token * 1000)
    with pytest.raises(ValueError):
        training_flops(model, -1, 20, 5)


def test_ladder_entries():
    assert size_name("mini") == "mini" and size_overrides("mini") == ("mini", {})
    spec = {"name": "w96", "d_model": 96, "n_layers": 2, "n_heads": 4}
    assert size_name(spec) == "w96"
    assert size_overrides(spec) == ("tiny", {"d_model": 96, "n_layers": 2, "n_heads": 4})
    with pytest.raises(ValueError, match="name"):
        size_name({"d_model": 96})


def test_alpha_interval_includes_zero_exactly_when_the_report_says_no_scaling():
    import pandas as pd

    from course.scaling import alpha_interval, fit_report

    table = pd.DataFrame(
        {
            "params_non_embedding": [1e4, 1e5, 1e6],
            "best_val_loss": [5.0, 4.9, 4.8],
            "best_val_ppl": [1, 1, 1],
        },
        index=["a", "b", "c"],
    ).assign(best_val_loss_std=0.05)
    clear = fit_power_law(*synthetic([1e4, 1e5, 1e6], e=0.0, alpha=0.25, seeds=2, noise=0.005))
    lo, hi = alpha_interval(clear)
    assert 0 < lo < 0.25 < hi
    assert "Scaling measured" in fit_report(clear, table)
    flat = fit_power_law(*synthetic([1e4, 1e5, 1e6], e=0.0, a=5.0, alpha=0.0, seeds=2, noise=0.05))
    lo, hi = alpha_interval(flat)
    assert lo < 0 < hi
    assert "no scaling was measured" in fit_report(flat, table)
    exact = fit_power_law(*synthetic([1e4, 1e6], e=0.0, alpha=0.5))  # no residual: no interval
    assert all(math.isnan(v) for v in alpha_interval(exact))
    assert "do not measure an exponent" in fit_report(exact, table)


def test_fit_report_says_when_the_law_misses_its_points_by_more_than_the_noise():
    import pandas as pd

    from course.scaling import fit_report

    table = pd.DataFrame(
        {
            "params_non_embedding": [1e4, 1e5, 1e6],
            "best_val_loss": [5.0, 4.9, 4.8],
            "best_val_ppl": [1, 1, 1],
        },
        index=["a", "b", "c"],
    )
    noisy = fit_power_law(*synthetic([1e4, 1e5, 1e6], e=0.0, alpha=0.25, seeds=2, noise=0.05))
    assert noisy["rmse"] > 0.01
    assert "does not describe these sizes" in fit_report(noisy, table.assign(best_val_loss_std=0.01))
    assert "does not describe these sizes" not in fit_report(noisy, table.assign(best_val_loss_std=1.0))


def test_compute_frontier_names_the_lowest_curve_at_each_budget():
    import pandas as pd

    from course.scaling import compute_frontier

    small = pd.DataFrame({"flops": [1e9, 1e10, 1e11], "loss": [5.0, 4.0, 3.8]})
    big = pd.DataFrame({"flops": [1e10, 1e11, 1e12], "loss": [5.0, 3.7, 3.0]})
    frontier, segments = compute_frontier({"small": small, "big": big}, points=61)
    assert [s[0] for s in segments] == ["small", "big"]  # small is cheaper early, big wins late
    assert segments[0][1] == pytest.approx(1e9) and segments[-1][2] == pytest.approx(1e12)
    assert frontier.iloc[0] == pytest.approx(5.0) and frontier.iloc[-1] == pytest.approx(3.0)
    assert (frontier.diff().dropna() <= 1e-12).all()  # the best loss so far never rises with budget


def test_returns_report_tells_shrinking_from_growing_returns_and_data_limits():
    import pandas as pd

    from course.scaling import returns_report

    n = [1e4, 1e4, 1e5, 1e5, 1e6, 1e6]
    shrinking = gain_per_doubling(n, [5.0, 5.0, 4.0, 4.0, 3.7, 3.7])
    growing = gain_per_doubling(n, [5.0, 5.0, 4.9, 4.9, 4.0, 4.0])
    rouge = gain_per_doubling(n, [1, 1, 2, 2, 3, 3], lower_is_better=False)
    table = pd.DataFrame(
        {"params_non_embedding": [1e4, 1e5, 1e6], "gap": [0.0, 0.1, 0.3], "epochs": [5.0] * 3},
        index=list("abc"),
    )
    labels = ["a→b", "b→c"]
    assert "shrinks" in returns_report(shrinking, rouge, labels, table)
    assert "grows" in returns_report(growing, rouge, labels, table)
    assert "data-limited." in returns_report(shrinking, rouge, labels, table)
    assert "No size is data-limited" in returns_report(shrinking, rouge, labels, table.assign(epochs=0.5))


def test_per_size_means_seeds_and_rouge_report_leaves_out_a_size_that_repeats_its_summaries():
    import pandas as pd

    from course.scaling import per_size, rouge_by_size_report

    def run(size, seed, rouge1, distinct, n):
        return dict(
            size=size, seed=seed, params_total=2 * n, params_non_embedding=n, flops=1e9 * n,
            train_time_s=1.0, supervised_tokens=100, epochs=0.5, best_val_loss=5.0, best_val_ppl=148.4,
            rouge1=rouge1, rouge2=1.0, rougeL=rouge1, distinct_share=distinct, final_train_loss=5.1,
            final_val_loss=5.2,
        )  # fmt: skip

    runs = pd.DataFrame(
        [
            run("mini", 0, 16.0, 0.01, 10),
            run("mini", 1, 14.0, 0.03, 10),
            run("tiny", 0, 9.0, 0.9, 40),
            run("tiny", 1, 11.0, 0.8, 40),
            run("small", 0, 12.0, 0.9, 160),
        ]
    )
    table = per_size(runs)
    assert list(table.index) == ["mini", "tiny", "small"]  # ladder order, not alphabetical
    assert table.loc["mini", "rouge1"] == 15.0 and table.loc["mini", "distinct_share"] == 0.02
    assert table.loc["tiny", "rouge1_std"] == pytest.approx(math.sqrt(2))
    assert table.loc["tiny", "gap"] == pytest.approx(0.1)
    longest3, published = {"rouge1": 13.0}, {"rouge1": 36.6}
    report = rouge_by_size_report(table, longest3, published)
    assert "mini: fewer than 50% of the summaries are distinct" in report
    assert "mostly distinct: small (12.0)" in report  # mini's 15.0 is left out; tiny's mean is 10.0
    assert "Sizes above LONGEST-3 on ROUGE-1: mini (repeats its summaries)." in report
    everyone = rouge_by_size_report(table, longest3, published, distinct_floor=1.0)
    assert "none (every size repeats its summaries)" in everyone
