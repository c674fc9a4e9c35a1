"""Exp 1's bookkeeping (course.architectures) on made-up measurements with known answers."""

import math

import pandas as pd
import pytest

from course.architectures import ArmMeasures, measured_findings, prediction_findings, run_speed, value_at_time
from reftx_lib.train.trainer import History

ARMS = ("encdec", "deconly", "deconly_matched", "prefix_lm")


def frame(seconds_per_step: float, losses: list[float]) -> pd.DataFrame:
    """A history frame with one evaluation per step."""
    steps = range(1, len(losses) + 1)
    return pd.DataFrame(
        {"step": list(steps), "wall_time": [s * seconds_per_step for s in steps], "val_loss": losses}
    )


def measures() -> ArmMeasures:
    ppl = {n: {"ppl": p, "loss": math.log(p)} for n, p in zip(ARMS, (120.0, 60.0, 59.0, 90.0))}
    speed = {n: {"steps": 4, "train_time_s": t} for n, t in zip(ARMS, (4.0, 8.0, 9.0, 8.0))}
    params = {n: {"total": 100, "non_embedding": 40, "cross_attention": 10 * (n == "encdec")} for n in ARMS}
    flops = {
        n: {"per_supervised_token": f, "per_second_half_token": 2 * f}
        for n, f in zip(ARMS, (4e6, 2e6, 3e6, 4e6))
    }
    quality = pd.DataFrame(
        {"repetition rate (4-grams)": [0.8, 0.1, 0.5, 0.2, 0.0], "distinct-2": [0.1, 0.9, 0.4, 0.8, 0.95]},
        index=["encdec greedy", "encdec top-p", "deconly greedy", "deconly top-p", "reference"],
    )
    return ArmMeasures(
        ppl=ppl,
        speed=speed,
        memory_mb={n: 10.0 for n in ARMS},
        params=params,
        flops=flops,
        d_ff={n: 512 for n in ARMS},
        quality=quality,
        ppl_all={"deconly": {"ppl": 55.0, "loss": math.log(55.0)}},
    )


def test_value_at_time_interpolates_between_evaluations_and_counts_the_steps_taken():
    f = frame(2.0, [6.0, 5.0, 4.0])  # evaluations at 2, 4 and 6 s
    assert value_at_time(f, 3.0) == (pytest.approx(5.5), 1)
    assert value_at_time(f, 6.0) == (pytest.approx(4.0), 3)


def test_run_speed_reads_the_last_record_of_a_history():
    h = History([{"step": 10, "wall_time": 5.0, "tokens": 1000, "supervised_tokens": 500, "val_loss": 3.0}])
    speed = run_speed(h)
    assert speed == {
        "steps": 10,
        "train_time_s": 5.0,
        "tokens_per_s": 200.0,
        "supervised_tokens_per_s": 100.0,
        "best_val_loss": 3.0,
    }


def test_comparisons_hold_one_thing_equal_at_a_time():
    m = measures()
    # the encoder-decoder is twice as fast per step: at its whole time (4 s) the decoder-only run took 2 steps
    frames = {"encdec": frame(1.0, [6.0, 5.5, 5.2, 5.0]), "deconly": frame(2.0, [5.0, 4.0, 3.6, 3.5])}
    comp, equal_time = m.comparisons(frames)
    assert list(comp.index) == [
        "equal steps",
        "equal wall-clock",
        "equal parameters",
        "same targets, one stack",
    ]
    assert comp.loc["equal steps", "enc-dec / dec-only"] == pytest.approx(2.0)
    assert comp.loc["equal parameters", "decoder-only"] == 59.0
    assert comp.loc["same targets, one stack", "decoder-only"] == 90.0
    assert comp.loc["equal wall-clock", "decoder-only"] == pytest.approx(4.0)
    assert comp.loc["equal wall-clock", "steps"] == "4 / 2"
    assert (comp["winner"] == "decoder-only").all()
    assert equal_time["all_minus_second_half"] == pytest.approx(math.log(55.0) - math.log(60.0))


def test_metrics_carry_what_the_table_shows_and_only_sampled_arms_have_repetition():
    m = measures()
    enc, matched = m.metrics("encdec"), m.metrics("deconly_matched")
    assert enc["ppl_second_half"] == 120.0 and enc["cross_attention_share"] == pytest.approx(0.1)
    assert enc["repetition_rate"] == 0.8 and "repetition_rate" not in matched
    assert "ppl_all_tokens" in m.metrics("deconly") and "ppl_all_tokens" not in enc
    table = m.table({n: n for n in ARMS}).data
    assert table.loc["deconly", "ppl, all tokens"] == 55.0 and math.isnan(
        table.loc["encdec", "ppl, all tokens"]
    )


def test_findings_say_what_failed_and_when_the_run_cannot_show_the_prediction():
    rows = [
        {
            "prediction": "ppl",
            "verdict": "fails",
            "predicted": "2.0–3.0",
            "measured": 1.5,
            "seed range": "1.4–1.6",
            "direction (enc-dec worse/slower/bigger)": "yes",
        },
        {
            "prediction": "params",
            "verdict": "holds",
            "predicted": "0.9–1.1",
            "measured": 1.0,
            "seed range": "1.0",
            "direction (enc-dec worse/slower/bigger)": "no",
        },
    ]
    lines = prediction_findings(rows, largest=2.5)
    assert lines[0] == "Of the seed's four predictions, 1 holds at this budget (params)."
    assert lines[1].startswith("- fails: ppl") and "opposite" not in lines[1]
    assert "too short" in lines[-1]
    assert "too short" not in " ".join(prediction_findings(rows, largest=10.0))
    text = " ".join(measured_findings(measures(), {"time": 0.5, "memory": 1.0}, 0.5, 1000))
    assert "(2.00×, the encoder-decoder is worse)" in text and "human text 0.00" in text


def test_a_budget_without_the_matched_arm_drops_only_the_equal_parameters_comparison():
    full = measures()
    kept = {
        k: v if k == "quality" else {n: x for n, x in v.items() if n != "deconly_matched"}
        for k, v in vars(full).items()
    }
    m = ArmMeasures(**kept)
    frames = {"encdec": frame(1.0, [6.0, 5.5, 5.2, 5.0]), "deconly": frame(2.0, [5.0, 4.0, 3.6, 3.5])}
    comp, _ = m.comparisons(frames)
    assert list(comp.index) == ["equal steps", "equal wall-clock", "same targets, one stack"]
    assert comp.loc["equal steps"].equals(full.comparisons(frames)[0].loc["equal steps"])
    text = " ".join(measured_findings(m, {"time": 0.5, "memory": 1.0}, 0.5, 1000))
    assert "not trained at this budget" in text and "matched parameters" not in text
