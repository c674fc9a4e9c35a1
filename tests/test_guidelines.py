"""The closing guidelines (course.guidelines) on small synthetic result dicts: each verdict follows its
numbers, each missing number gives "cannot decide" with the reason, never an exception."""

import inspect
import json
import re
from pathlib import Path

import pytest

from course import guidelines as gl
from course.report import FLAT
from course.scaling import fit_report

ROOT = Path(__file__).resolve().parent.parent
PROV = {
    "budget": "full",
    "commit": "abc1234",
    "date": "2026-01-01 00:00 UTC",
    "device": "CPU (test, 2 threads)",
}
FLATTENED = {"last_quarter_improvement": {"a": FLAT / 2, "b": FLAT / 4}}


def stored(metrics: dict, **prov) -> dict:
    return {"metrics": metrics, "provenance": {**PROV, **prov}}


# ---- reading ---------------------------------------------------------------------------------------


def test_pick_reads_by_name_and_reports_gaps_as_none():
    s = stored({"a": {"b": {"c": 3}}, "x": None})
    assert gl.pick(s, "a", "b", "c") == 3
    assert gl.pick(s, "a", "missing") is None
    assert gl.pick(s, "x", "y") is None
    assert gl.pick(None, "a") is None


def test_run_line_names_budget_commit_date_device_and_reads_the_older_preset_key():
    assert (
        gl.run_line(stored({})) == "budget full, commit abc1234, 2026-01-01 00:00 UTC, CPU (test, 2 threads)"
    )
    older = {"metrics": {}, "provenance": {"preset": "cpu", "commit": "c0ffee0", "date": "d", "device": "e"}}
    assert gl.run_line(older).startswith("budget cpu, commit c0ffee0")


def test_fractions_written_as_1_and_1_0_are_the_same_key():
    assert gl.by_float_key({"1": "a", "0.1": "b", "note": "c"}) == {1.0: "a", 0.1: "b"}


def test_load_stored_names_what_to_run_for_each_missing_result(tmp_path, monkeypatch):
    monkeypatch.setenv("REFTX_RESULTS_DIR", str(tmp_path))
    (tmp_path / "exp1").mkdir()
    (tmp_path / "exp1" / "smoke.json").write_text(json.dumps(stored({}, budget="smoke")))
    results, lines = gl.load_stored("smoke")
    assert results["exp1"] is not None and results["exp4"] is None
    assert lines[0] == "exp1: budget smoke, commit abc1234, 2026-01-01 00:00 UTC, CPU (test, 2 threads)"
    assert "no stored exp4 result for budget smoke: run notebook 06" in lines
    assert "no stored bench result for budget cpu: run `make bench` (tools/)" in lines  # bench is per device


def test_notebook_of_each_experiment_matches_the_conventions_table():
    table = (ROOT / "notebooks" / "CONVENTIONS.md").read_text()
    for experiment, number in gl.NOTEBOOK_OF.items():
        row = next(line for line in table.splitlines() if f"`results/{experiment}/`" in line)
        assert row.startswith(f"| `{number}_"), f"{experiment}: CONVENTIONS.md says {row[:30]}"


def test_seed_predictions_are_notebook_04s():
    nb = json.loads((ROOT / "notebooks" / "04_exp1_encdec_on_raw_text.ipynb").read_text())
    source = next("".join(c["source"]) for c in nb["cells"] if "predictions = {" in "".join(c["source"]))
    for name, (low, high) in gl.SEED_PREDICTIONS.items():
        assert re.search(rf'"{name}": \(.*\({low}, {high}\)\)', source), name


def test_kaplan_exponent_is_the_one_exp4_reports_against():
    assert gl.KAPLAN_ALPHA_N == inspect.signature(fit_report).parameters["kaplan_alpha"].default


# ---- comparing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "diff, noise, expected",
    [
        (0.3, 0.1, "above"),
        (-0.3, 0.1, "below"),
        (0.2, 0.1, "within"),
        (0.19, 0.1, "within"),
        (0.3, None, "no noise"),
        (None, 0.1, "missing"),
    ],
)
def test_judge_decides_only_beyond_twice_the_noise(diff, noise, expected):
    assert gl.judge(diff, noise) == expected


def test_judge_follows_the_multiple():
    assert gl.judge(0.25, 0.1, multiple=2) == "above"
    assert gl.judge(0.25, 0.1, multiple=3) == "within"


def test_seed_spread_needs_two_seeds():
    assert gl.seed_spread([1.2]) is None
    assert gl.seed_spread([1.2, 1.5, None, 1.3]) == pytest.approx(0.3)


def test_strength_levels():
    assert gl.strength(False, ["x"]) == "none"
    assert gl.strength(True) == "strong"
    assert gl.strength(True, ["one seed"]) == "moderate: one seed"
    assert gl.strength(True, ["one seed"], failed="not flattened") == "weak: not flattened"


def test_flattened_reads_the_last_quarter_falls():
    assert gl.flattened(stored(FLATTENED)) is True
    assert gl.flattened(stored({"last_quarter_improvement": {"a": FLAT * 2}})) is False
    assert gl.flattened(stored({})) is None


# ---- 1. raw text -------------------------------------------------------------------------------------


def exp1(by_seed=(1.5, 1.52), unigram=1000.0, prefix=160.0, **extra) -> dict:
    return stored(
        {
            "verdicts": {"perplexity_ratio_by_seed": {str(i): r for i, r in enumerate(by_seed)}},
            "encdec": {"ppl_second_half": 150.0},
            "deconly": {"ppl_second_half": 100.0},
            "prefix_lm": {"ppl_second_half": prefix},
            "unigram_ppl_second_half": unigram,
            **FLATTENED,
            **extra,
        }
    )


def test_raw_text_a_ratio_beyond_twice_the_seed_spread_picks_the_decoder_only_model():
    g = gl.raw_text_guideline(exp1(), None)
    assert g.verdict == "use a decoder-only model"
    assert g.strength == "strong"
    assert "1.51× the decoder-only model's (seeds 1.50–1.52)" in g.sentence
    assert "prediction of 2–3× fails" in g.sentence
    assert "not from cross-attention" in g.sentence  # the prefix LM (160) is no better than enc-dec (150)
    assert [n.role for n in g.numbers][:2] == ["measured", "measured"]


def test_raw_text_prefix_lm_better_puts_part_of_the_gap_on_the_architecture():
    g = gl.raw_text_guideline(exp1(prefix=120.0), None)
    assert "part of the gap is the encoder-decoder's architecture" in g.sentence


def test_raw_text_within_the_seed_spread_or_from_one_seed_cannot_decide():
    assert (
        gl.raw_text_guideline(exp1(by_seed=(1.01, 1.05)), None).verdict
        == "cannot decide: within the seed noise"
    )
    one = gl.raw_text_guideline(exp1(by_seed=(1.5,)), None)
    assert one.verdict == "cannot decide: one seed, no noise estimate" and one.strength == "none"


def test_raw_text_a_model_above_the_unigram_floor_makes_the_verdict_weak():
    assert gl.raw_text_guideline(exp1(unigram=120.0), None).strength.startswith("weak")


def test_raw_text_reads_an_older_result_with_only_the_mean_ratio():
    old = stored({"verdicts": {"perplexity_ratio": 2.1}})
    g = gl.raw_text_guideline(old, None)
    assert g.verdict == "cannot decide: one seed, no noise estimate"
    assert "2.10×" in g.sentence


# ---- 2. cost ------------------------------------------------------------------------------------------


def bench_row(arch, size, ms, mem, params, ci=0.01):
    return {
        "kind": "train",
        "mode": "eager",
        "arch": arch,
        "config": size,
        "ms_per_step": ms,
        "peak_mem_mib": mem,
        "params": params,
        "ratio": 1.0,
        "ratio_ci_low": 1.0 - ci,
        "ratio_ci_high": 1.0 + ci,
    }


def bench() -> dict:
    rows = [
        bench_row("decoder-only", "big", 100, 100, 10_000),
        bench_row("encoder-decoder", "big", 140, 140, 20_000),
        bench_row("decoder-only", "small", 10, 10, 1_000),
        bench_row("encoder-decoder", "small", 9, 11, 2_000),
        {**bench_row("encoder-decoder", "small", 1, 1, 1), "mode": "compile"},  # another mode: not read
    ]
    return stored({"rows": rows}, budget="cpu", device="another CPU")


def test_bench_ratios_pair_the_architectures_per_size_smallest_first():
    sizes = gl.bench_ratios(bench())
    assert [r["size"] for r in sizes] == ["small", "big"]
    assert sizes[1]["time"] == pytest.approx(1.4) and sizes[1]["memory"] == pytest.approx(1.4)
    assert sizes[0]["time_noise"] == pytest.approx(0.01)


def test_cost_names_where_the_encoder_decoder_turns_slower_and_which_range_holds():
    e1 = exp1(verdicts={"time_ratio_by_seed": {"0": 0.7, "1": 0.74}, "memory_ratio": 1.0, "param_ratio": 1.2})
    g = gl.cost_guideline(e1, bench())
    assert "slower beyond the timing noise from big up" in g.sentence
    assert "bench big memory ratio 1.40 inside 1.3–1.5×: holds" in g.comparisons
    assert g.verdict.startswith("a predicted range holds")
    assert "the benchmark ran on another machine than Exp 1" in g.strength


def test_cost_does_not_judge_memory_that_does_not_resolve_the_extra_parameters_state():
    # 1,000 extra parameters carry 12 kB of gradient and AdamW state; the peaks differ by less
    floor = {
        "encdec": {"peak_mem_mb": 80.001, "total_parameters": 2000},
        "deconly": {"peak_mem_mb": 80.0, "total_parameters": 1000},
    }
    seen, least = gl.memory_resolution(stored(floor))
    assert seen == pytest.approx(0.001) and least == pytest.approx(12_000 / 2**20)
    g = gl.cost_guideline(exp1(verdicts={"memory_ratio": 1.0}, **floor), None)
    assert "Its memory cannot be judged at this size" in g.sentence
    assert not any("peak training memory ratio" in c for c in g.comparisons)
    resolved = {**floor, "encdec": {"peak_mem_mb": 90.0, "total_parameters": 2000}}
    g = gl.cost_guideline(exp1(verdicts={"memory_ratio": 1.125}, **resolved), None)
    assert "Its peak training memory is 1.12× (predicted 1.3–1.5×: fails)" in g.sentence


def test_cost_without_either_result_cannot_decide():
    assert gl.cost_guideline(None, None).verdict == "cannot decide: no stored exp1 or bench result"


# ---- 3. does the SAMSum baseline read? ----------------------------------------------------------------


def samsum(gate=None, best=5.0) -> dict:
    m = {"rouge": {"rouge1": 15.0}, "longest3": {"rouge1": 32.0}, "best_val_loss": best, **FLATTENED}
    return stored({**m, "source_use": gate} if gate else m)


def gate(gain=0.5, distinct=0.95, names=0.95) -> dict:
    return {
        "ablation_gain_nats": gain,
        "distinct_share_greedy": distinct,
        "speaker_name_precision": names,
        "thresholds": {"gain": 0.3, "distinct": 0.9, "names": 0.9},
    }


def test_samsum_passing_all_three_thresholds_reads_and_then_rouge_counts():
    g = gl.samsum_guideline(samsum(gate()), None)
    assert g.verdict == "reads its dialogue"
    assert "against LONGEST-3's 32.0" in g.sentence


def test_samsum_one_number_below_its_threshold_decides_does_not_read():
    g = gl.samsum_guideline(samsum(gate(names=0.5)), None)
    assert g.verdict == "does not read its dialogue"
    assert "speaker-name precision" in g.sentence and "ranks nothing" in g.sentence


def test_samsum_without_a_gate_uses_exp3s_ablation_of_the_same_checkpoint_only():
    exp3 = stored({"best_val_loss": {"samsum": 5.0}, "source_ablation": {"SAMSum, trained": {"gain": 0.04}}})
    g = gl.samsum_guideline(samsum(), exp3)
    assert g.verdict == "does not read its dialogue"
    assert "Exp 3's ablation of the same checkpoint" in g.sentence and "exp3" in g.runs
    other = gl.samsum_guideline(samsum(best=5.1), exp3)  # another checkpoint: its ablation says nothing here
    assert other.verdict == "cannot decide: no gate stored"


def test_samsum_a_high_gain_alone_cannot_decide_that_it_reads():
    exp3 = stored({"best_val_loss": {"samsum": 5.0}, "source_ablation": {"SAMSum, trained": {"gain": 0.9}}})
    g = gl.samsum_guideline(samsum(), exp3)
    assert g.verdict.startswith("cannot decide") and "not stored" in g.verdict


# ---- 4. attention -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "trained, control, spread, sign, expected",
    [
        (-0.10, 0.0, 0.01, -1, "as hypothesised"),
        (0.10, 0.0, 0.01, -1, "opposite to the hypothesis"),
        (-0.01, 0.0, 0.01, -1, "within noise"),
        (-0.01, 0.10, 0.01, -1, "cannot decide: only the untrained control's difference makes the effect"),
        (-0.10, 0.0, None, -1, "cannot decide: one seed, no noise estimate"),
        (None, 0.0, 0.01, -1, "cannot decide: not stored"),
    ],
)
def test_contrast_verdict_follows_exp3s_rule(trained, control, spread, sign, expected):
    assert gl.contrast_verdict(trained, control, spread, sign) == expected


def exp3(samsum_gain, effect) -> dict:
    contrast = {
        stat: {
            "SAMSum − raw, trained": sign * effect,
            "SAMSum − raw, untrained": 0.0,
            "raw-text seed spread": 0.001,
        }
        for stat, sign in gl.HYPOTHESIS_SIGN.items()
    }
    ablation = {
        "SAMSum, trained": {"gain": samsum_gain},
        "raw text, seed 0": {"gain": 0.2},
        "raw text, seed 1": {"gain": 0.21},
    }
    return stored({"contrast": contrast, "source_ablation": ablation, **FLATTENED})


def test_attention_of_a_model_that_does_not_read_cannot_decide():
    g = gl.attention_guideline(exp3(0.01, effect=0.1), None)
    assert g.verdict == "cannot decide: the SAMSum model measured does not read its dialogue"
    assert g.strength == "none"
    assert "what its training makes pay" in g.sentence  # the raw-text model's larger gain, beyond its spread


def test_attention_of_a_reading_model_holds_when_every_statistic_agrees():
    assert gl.attention_guideline(exp3(0.5, effect=0.1), None).verdict == "holds"
    assert gl.attention_guideline(exp3(0.5, effect=-0.1), None).verdict == "fails"
    assert gl.attention_guideline(exp3(0.5, effect=0.0001), None).verdict.startswith(
        "cannot decide: no statistic"
    )


# ---- 5. scaling ---------------------------------------------------------------------------------------


def exp4(lo=0.01, hi=0.03, **fit) -> dict:
    sizes = [
        {
            "name": "big",
            "params_non_embedding": 8e5,
            "params_total": 1e6,
            "best_val_loss": 5.0,
            "best_val_loss_std": 0.02,
            "supervised_tokens": 1e5,
            "distinct_share": 0.02,
        },
        {
            "name": "small",
            "params_non_embedding": 1e5,
            "params_total": 2e5,
            "best_val_loss": 5.4,
            "best_val_loss_std": 0.04,
            "distinct_share": 0.01,
        },
    ]
    fit = {"alpha": 0.02, "alpha_lo95": lo, "alpha_hi95": hi, "constrained": False, "n_sizes": 2, **fit}
    return stored({"fit": fit, "sizes": sizes, **FLATTENED})


def test_scaling_measured_when_the_interval_lies_above_zero_with_its_caveats():
    g = gl.scaling_guideline(exp4())
    assert g.verdict == "scaling measured"
    assert (
        "From small to big (8× the non-embedding parameters) the validation loss falls 0.400 nats"
        in g.sentence
    )
    assert (
        g.strength.startswith("moderate")
        and "lower bound" in g.strength
        and "tokens per parameter" in g.strength
    )
    assert "ROUGE cannot rank the sizes" in g.sentence


def test_scaling_interval_including_zero_cannot_decide():
    assert (
        gl.scaling_guideline(exp4(lo=-0.01)).verdict == "cannot decide: the 95% interval of alpha includes 0"
    )


def test_scaling_without_a_stored_interval_uses_the_standard_error():
    s = exp4(lo=None, hi=None, alpha_std=0.001, dof=4)
    lo, hi = gl.stored_alpha_interval(gl.pick(s, "fit"))
    assert 0 < lo < 0.02 < hi
    assert (
        gl.scaling_guideline(exp4(lo=None, hi=None)).verdict
        == "cannot decide: no interval for alpha is stored"
    )


# ---- 6. transfer --------------------------------------------------------------------------------------


def exp5(noise=0.05, equal_compute=5.6, seeds_at_full=1) -> dict:
    return stored(
        {
            "val_loss": {
                "scratch": {"0.1": 5.8, "1.0": 5.7},
                "transfer": {"0.1": 5.2, "1.0": 5.0},
                "scratch_equal_compute": {"0.1": equal_compute, "1.0": None},
            },
            "summary": {
                "noise": noise,
                "fractions": {
                    "0.1": {"gain_per_seed": {"0": 0.6, "1": 0.62}, "embedding_share_of_gain": 0.5},
                    "1": {"gain_per_seed": {str(s): 0.7 for s in range(seeds_at_full)}},
                },
            },
            "distinct_share": {"scratch": {"0.1": 0.02, "1.0": 0.01}, "transfer": {"0.1": 0.9, "1.0": 0.8}},
            **FLATTENED,
        }
    )


def test_transfer_gains_beyond_twice_the_noise_help_with_the_controls_in_the_sentence():
    g = gl.transfer_guideline(exp5())
    assert g.verdict == "pretraining helps"
    assert "At 10% it beats spending the same compute on SAMSum (+0.40 nats)" in g.sentence
    assert "At 100% the equal-compute control was not trained" in g.sentence
    assert (
        "one seed at 100%" in g.strength
        and "ROUGE cannot confirm it: the scratch model repeats" in g.sentence
    )


def test_transfer_loses_to_the_equal_compute_control_and_cannot_decide_without_noise():
    assert "loses to spending the same compute" in gl.transfer_guideline(exp5(equal_compute=4.9)).sentence
    no_noise = stored({"val_loss": {"scratch": {"0.1": 5.8}, "transfer": {"0.1": 5.2}}})
    assert gl.transfer_guideline(no_noise).verdict == "cannot decide: one seed, no noise estimate"


# ---- every guideline, whatever is missing ---------------------------------------------------------------

BUILDERS = {
    "raw_text": lambda s: gl.raw_text_guideline(s, s),
    "cost": lambda s: gl.cost_guideline(s, s),
    "samsum": lambda s: gl.samsum_guideline(s, s),
    "attention": lambda s: gl.attention_guideline(s, s),
    "scaling": gl.scaling_guideline,
    "transfer": gl.transfer_guideline,
}


@pytest.mark.parametrize("name", BUILDERS)
@pytest.mark.parametrize("result", [None, stored({})], ids=["absent", "empty"])
def test_every_guideline_says_cannot_decide_when_its_numbers_are_missing(name, result):
    g = BUILDERS[name](result)
    assert g.verdict.startswith("cannot decide"), g.verdict
    assert g.strength == "none" and g.sentence
    assert gl.show(g)  # and it still shows


def test_show_puts_the_inputs_and_comparisons_before_the_verdict():
    text = gl.show(gl.raw_text_guideline(exp1(), None))
    assert text.index("Inputs:") < text.index("Runs:") < text.index("Comparisons:") < text.index("Verdict:")
    assert "exp1: budget full, commit abc1234" in text


def test_summary_frame_has_one_row_per_guideline():
    frame = gl.summary_frame([gl.raw_text_guideline(exp1(), None), gl.scaling_guideline(None)])
    assert list(frame.columns) == ["guideline", "verdict", "evidence", "strength"]
    assert frame["strength"].tolist() == ["strong", "none"]


def test_all_guidelines_builds_the_six_at_one_multiple():
    results = {"exp1": exp1(by_seed=(1.5, 1.6)), "exp5": exp5()}
    strict = gl.all_guidelines(results, multiple=20)
    assert len(strict) == 6 and len(gl.all_guidelines({})) == 6
    assert strict[0].verdict == "cannot decide: within the seed noise"  # 0.55 is not beyond 20 × 0.1
    assert gl.all_guidelines(results)[0].verdict == "use a decoder-only model"
