"""The learning-per-CPU-minute sweep at CI size: its points, its bits-per-byte unit and its verdicts."""

import json
import math

import pytest

from course import sweep


def test_points_move_one_factor_at_a_time_and_repeat_the_base_per_seed():
    points = sweep.sweep_points(seeds=(0, 1))
    base = [p for p in points if p["axis"] == "base"]
    assert [p["seed"] for p in base] == [0, 1]
    for p in points:
        changed = [k for k in sweep.BASE if p[k] != sweep.BASE[k]]
        assert changed == ([] if p["axis"] == "base" else [p["axis"]])
    assert len(points) == 2 + sum(len(v) for v in sweep.AXES.values())
    with pytest.raises(ValueError, match="no base value"):
        sweep.sweep_points(axes={"dropout": [0.0]})


def test_tokens_per_byte_counts_the_specials_of_a_block():
    class Chars:  # one token per character
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [list(t) for t in texts]}

    assert sweep.tokens_per_byte(Chars(), ["abcd", "ef"]) == pytest.approx((4 + 2 + 2 + 2) / 6)


def _point(axis, value, bpb, seed=0):
    return {
        **sweep.BASE,
        "axis": axis,
        axis if axis != "base" else "lr": value,
        "seed": seed,
        "bits_per_byte": bpb,
    }


def test_a_value_beats_the_base_only_by_more_than_twice_the_seed_noise():
    base = [_point("base", 2e-3, 2.00, 0), _point("base", 2e-3, 2.02, 1)]  # noise 0.02, mean 2.01
    lines = sweep.verdicts({"points": [*base, _point("lr", 4e-3, 1.95), _point("block_size", 512, 1.99)]})
    assert "seed noise 0.0200" in lines[0]
    assert lines[1].startswith("lr = 0.004 beats the base (0.002) by 0.0600")
    assert lines[2].startswith(
        "best block_size = 512 gains 0.0200 bits/byte, within twice the noise: keep 256"
    )
    one_seed = sweep.verdicts({"points": [base[0], _point("lr", 4e-3, 1.5)]})
    assert "every difference is unjudged" in one_seed[0] and "unjudged without seed noise" in one_seed[1]


def test_sweep_end_to_end_at_ci_size(tmp_path, monkeypatch, capsys):
    """Two base seeds and one other learning rate on a nano model, two seconds each, with provenance."""
    monkeypatch.setenv("REFTX_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(sweep, "AXES", {"lr": [4e-3]})
    args = "--size nano --seconds 2 --n-train-docs 40 --n-eval-docs 8 --jobs 1 --save test"
    assert sweep.main(args.split()) == 0
    stored = json.loads((tmp_path / "sweep" / "test.json").read_text())
    points = stored["metrics"]["points"]
    assert [(p["axis"], p["seed"]) for p in points] == [("base", 0), ("base", 1), ("lr", 0)]
    for p in points:
        assert p["steps"] >= 10 and p["tokens"] > 0 and 0 < p["matmul_peak_fraction"] < 1
        assert p["bits_per_byte"] == pytest.approx(p["val_loss"] * p["bits_per_byte_per_nat"], rel=1e-4)
        assert p["curve"][-1][2] < math.log(8192)  # it learned something
    head = stored["metrics"]["headline"]
    assert head["best_bits_per_byte"] == min(p["bits_per_byte"] for p in points)
    assert head["seed_noise"] == pytest.approx(abs(points[0]["bits_per_byte"] - points[1]["bits_per_byte"]))
    assert stored["provenance"]["budget"] == "test" and stored["provenance"]["commit"]
    out = capsys.readouterr().out
    assert "bits/byte" in out and "seed noise" in out
    assert sweep.main(["--show", "test"]) == 0
