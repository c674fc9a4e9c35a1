"""Trainer, checkpoint and evaluation tests on tiny synthetic data (d_model 32, 1 layer, vocab 40)."""

import itertools
import math
import random
import re

import pytest
import torch

from course.evaluation import kept_steps, longest_3, rouge_trend, summary_diversity, unigram_loss
from course.report import curve, flattened, last_quarter_improvement, steady_step_seconds
from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.train.checkpoint import load_checkpoint, load_model
from reftx_lib.train.evaluation import (
    compute_rouge,
    evaluate_loss,
    perplexity,
    source_ablation,
    source_use,
    speaker_name_precision,
)
from reftx_lib.train.trainer import History, TrainConfig, lr_lambda, train

V = 40
TINY = dict(vocab_size=V, d_model=32, n_layers=1, n_heads=2, d_ff=64, dropout=0.1, max_len=64)


def synthetic_rows(n, packed, seed=0):
    """Copy task: the target repeats the source, so both models can learn it."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        src = [rng.randrange(4, V) for _ in range(rng.randrange(3, 9))]
        rows.append(src + [3] + src + [2] if packed else [1] + src + src + [2])
    return rows


def make(cls, seed=0):
    torch.manual_seed(seed)
    return cls(**TINY)


def cfg(**kw):
    base = dict(
        max_steps=12,
        lr=3e-3,
        warmup_steps=2,
        batch_tokens=256,
        eval_every=4,
        eval_batches=2,
        progress=False,
        seed=7,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("cls,packed", [(ReferenceTransformer, True), (ReferenceDecoderOnly, False)])
def test_history_fields_and_loss_goes_down(cls, packed):
    rows = synthetic_rows(200, packed)
    hist = train(make(cls), rows[:180], rows[180:], cfg(max_steps=60, eval_every=20))
    assert len(hist) == 60
    keys = {
        "step",
        "epoch",
        "train_loss",
        "val_loss",
        "val_ppl",
        "lr",
        "tokens",
        "supervised_tokens",
        "wall_time",
        "tokens_per_s",
        "peak_mem_mb",
        "padding_waste",
    }
    assert keys <= set(hist[0])
    assert [r["step"] for r in hist.evals()] == [20, 40, 60]
    assert hist.evals()[-1]["val_loss"] < hist.evals()[0]["val_loss"] < hist[0]["train_loss"]
    assert hist[-1]["supervised_tokens"] < hist[-1]["tokens"]
    assert hist[1]["epoch"] == 0 and hist[-1]["epoch"] >= 1  # 180 short rows: several epochs


def test_same_seed_gives_identical_history():
    rows = synthetic_rows(100, True)
    a = train(make(ReferenceTransformer), rows[:90], rows[90:], cfg())
    b = train(make(ReferenceTransformer), rows[:90], rows[90:], cfg())
    cols = ("train_loss", "val_loss", "lr", "tokens", "supervised_tokens")
    assert [[r[c] for c in cols] for r in a] == [[r[c] for c in cols] for r in b]
    c = train(make(ReferenceTransformer), rows[:90], rows[90:], cfg(seed=8))
    assert [r["train_loss"] for r in a] != [r["train_loss"] for r in c]


@pytest.mark.parametrize("cls,packed", [(ReferenceTransformer, True), (ReferenceDecoderOnly, False)])
def test_resume_continues_exactly(tmp_path, cls, packed):
    rows = synthetic_rows(60, packed)  # several epochs in 12 steps: resume must restore the data position
    straight = make(cls)
    hist = train(straight, rows[:50], rows[50:], cfg())
    first = make(cls)
    train(first, rows[:50], rows[50:], cfg(stop_after=6, checkpoint_dir=str(tmp_path)))
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6
    resumed = make(cls, seed=123)  # different init: everything must come from the checkpoint
    hist2 = train(
        resumed, rows[:50], rows[50:], cfg(checkpoint_dir=str(tmp_path)), resume=tmp_path / "last.pt"
    )
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    assert [r["train_loss"] for r in hist] == [r["train_loss"] for r in hist2]


def test_checkpoint_rebuilds_model_and_is_atomic(tmp_path):
    rows = synthetic_rows(40, True)
    model = make(ReferenceTransformer)
    train(model, rows[:30], rows[30:], cfg(max_steps=4, checkpoint_dir=str(tmp_path), tokenizer={"vocab": V}))
    names = sorted(p.name for p in tmp_path.iterdir())  # the weights named by their state's sha256
    assert [re.sub(r"\.[0-9a-f]{16}\.", ".<sha>.", n) for n in names] == [
        "best.<sha>.safetensors",
        "best.pt",
        "last.<sha>.safetensors",
        "last.pt",
    ]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert {"optimizer", "scheduler", "rng", "train_config", "history", "tokenizer"} <= set(ckpt)
    rebuilt = load_model(tmp_path / "last.pt").eval()
    ids = torch.tensor(rows[30:32][0])[None]
    torch.testing.assert_close(rebuilt(ids)["logits"], model.eval()(ids)["logits"])


def test_kept_steps_hold_the_weights_of_the_run_stopped_there(tmp_path):
    """``keep_every`` keeps step-<N>.pt: the model a run stopped at step N would end with."""
    rows = synthetic_rows(40, True)
    train(
        make(ReferenceTransformer),
        rows[:30],
        rows[30:],
        cfg(checkpoint_dir=str(tmp_path / "kept"), keep_every=5),
    )
    kept = kept_steps(tmp_path / "kept")
    assert list(kept) == [5, 10]
    stopped = make(ReferenceTransformer)
    train(stopped, rows[:30], rows[30:], cfg(stop_after=5))
    for name, p in load_model(kept[5]).state_dict().items():
        assert torch.equal(p, stopped.state_dict()[name]), name
    assert load_checkpoint(kept[10])["step"] == 10


def poison_losses_after(model, monkeypatch, good_steps: int) -> None:
    """Make every training loss after the first ``good_steps`` training steps NaN."""
    forward = model.forward
    calls = {"n": 0}

    def poisoned(*a, **kw):
        out = forward(*a, **kw)
        calls["n"] += model.training
        if model.training and calls["n"] > good_steps:
            key = "loss" if "loss" in out else "hidden"  # the trainer applies the head itself (head=False)
            out[key] = out[key] * float("nan")
        return out

    monkeypatch.setattr(model, "forward", poisoned)


def test_non_finite_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    rows = synthetic_rows(40, False)
    model = make(ReferenceDecoderOnly)
    poison_losses_after(model, monkeypatch, 5)  # training steps 6, 7, ... go bad
    with pytest.raises(FloatingPointError, match="step 6"):
        train(model, rows[:30], rows[30:], cfg(eval_every=2, eval_batches=1, checkpoint_dir=str(tmp_path)))
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4


@pytest.mark.parametrize("cls,packed", [(ReferenceTransformer, True), (ReferenceDecoderOnly, False)])
def test_losses_copied_in_windows_equal_per_step_copies(tmp_path, cls, packed):
    """log_every only changes when losses reach the host (once per window on a GPU), never the run."""
    rows = synthetic_rows(60, packed)
    a, b = make(cls), make(cls)
    ha = train(a, rows[:50], rows[50:], cfg(log_every=1))
    hb = train(b, rows[:50], rows[50:], cfg(log_every=5, checkpoint_dir=str(tmp_path)))
    cols = ("step", "train_loss", "val_loss", "lr", "tokens", "supervised_tokens", "padding_waste")
    assert [[r[c] for c in cols] for r in ha] == [[r[c] for c in cols] for r in hb]
    assert all(r["wall_time"] > 0 and r["tokens_per_s"] > 0 for r in hb)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert load_checkpoint(tmp_path / "last.pt")["history"] == list(hb)


def test_non_finite_loss_inside_a_log_window_names_its_step(tmp_path, monkeypatch):
    """Steps 5-7 form one window (log_every 3, checkpoint at 4): the error still names step 6."""
    rows = synthetic_rows(40, False)
    model = make(ReferenceDecoderOnly)
    poison_losses_after(model, monkeypatch, 5)
    with pytest.raises(FloatingPointError, match="at step 6;"):
        train(
            model,
            rows[:30],
            rows[30:],
            cfg(eval_every=4, eval_batches=1, log_every=3, checkpoint_dir=str(tmp_path)),
        )
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4


def test_compiled_training_matches_eager_without_graph_breaks(monkeypatch):
    """TrainConfig.compile traces the whole forward + loss as one graph over varying batch shapes.

    The aot_eager backend captures forward and backward like inductor does but runs
    eager kernels, so the test takes seconds instead of minutes of C++ compilation;
    the benchmark's compile rows exercise inductor itself.
    """
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend="aot_eager", **kw))
    torch._dynamo.reset()
    counters.clear()
    rows = synthetic_rows(60, True)
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)  # no dropout: compiled code would draw its random numbers differently
        model = ReferenceTransformer(**{**TINY, "dropout": 0.0})
        runs.append(train(model, rows[:50], rows[50:], cfg(max_steps=6, compile=compiled)))
    assert [r["train_loss"] for r in runs[1]] == pytest.approx([r["train_loss"] for r in runs[0]], rel=1e-4)
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"], dict(
        counters["graph_break"]
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs only exist with an accelerator")
def test_no_host_sync_between_log_points():
    """On CUDA the number of device-to-host syncs does not grow with the steps inside one log window."""
    import warnings

    rows = synthetic_rows(200, True)

    def syncs(steps: int) -> int:
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train(
                    make(ReferenceTransformer),
                    rows[:180],
                    rows[180:],
                    cfg(max_steps=steps, eval_every=steps, eval_batches=1, log_every=steps, device="cuda"),
                )
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(20) == syncs(10)


def test_lr_schedule_warmup_then_cosine():
    values = [lr_lambda(s, 10, 100, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_second_half_perplexity_scores_the_same_tokens():
    """Decoder-only second-half labels count exactly as many tokens as the encoder-decoder targets."""
    docs = [[5, 6, 7, 8, 9], [10, 11, 12, 13]]
    enc_rows = {"input_ids": [d[: len(d) // 2] + [3] + d[len(d) // 2 :] + [2] for d in docs]}
    dec_rows = {"input_ids": [[1] + d + [2] for d in docs], "source_len": [len(d) // 2 for d in docs]}
    enc = perplexity(make(ReferenceTransformer), enc_rows, second_half_only=True)
    dec = perplexity(make(ReferenceDecoderOnly), dec_rows, second_half_only=True)
    full = perplexity(make(ReferenceDecoderOnly), dec_rows)
    assert enc["tokens"] == dec["tokens"] == (3 + 1) + (2 + 1)
    assert full["tokens"] == 6 + 5


def test_evaluate_loss_is_token_weighted():
    model = make(ReferenceDecoderOnly).eval()
    rows = synthetic_rows(10, False)
    whole = evaluate_loss(model, rows, batch_tokens=10_000)
    per_batch = evaluate_loss(model, rows, batch_tokens=24)  # many small batches
    assert whole["tokens"] == per_batch["tokens"]
    assert whole["loss"] == pytest.approx(per_batch["loss"], rel=1e-5)


def test_rouge_on_known_pairs():
    same = compute_rouge(["Amanda baked cookies."], ["Amanda baked cookies."])
    assert all(v == pytest.approx(100.0) for v in same.values())
    # 2 of 3 unigrams shared, stemming maps "bakes" to "bake": P = R = 2/3
    half = compute_rouge(["Amanda bakes bread"], ["Amanda baked cookies"])
    assert half["rouge1"] == pytest.approx(200 / 3)
    assert half["rouge2"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="pair up"):
        compute_rouge(["a"], [])


def test_summary_diversity_sees_one_summary_for_every_dialogue():
    same = summary_diversity(["Tom will go to the week."] * 4)
    assert same["distinct_share"] == 0.25 and same["distinct_2"] == 0.25
    varied = summary_diversity(["Ann buys milk.", "Bob is late.", "Ann buys milk. Ann buys milk."])
    assert varied["distinct_share"] == 1.0 and varied["repetition_rate"] == 1 / 6
    with pytest.raises(ValueError, match="no summaries"):
        summary_diversity([])


def test_rouge_trend_reads_the_slope_per_doubling_of_tokens():
    rows = [{"tokens": 1000 * 2**k, "rouge1": 10 + 3 * k} for k in range(4)]
    trend = rouge_trend(rows, target=25.0)
    assert trend["slope_per_doubling"] == pytest.approx(3.0) and trend[
        "doublings_to_target"
    ] == pytest.approx(2.0)
    flat = rouge_trend([{"tokens": t, "rouge1": 9.0} for t in (1, 2, 4)], target=25.0)
    assert math.isnan(flat["doublings_to_target"])
    assert rouge_trend(rows, target=5.0)["doublings_to_target"] == 0.0


def test_unigram_loss_is_the_smoothed_frequency_model():
    loss = unigram_loss([[4, 4, 5]], [4, 5], vocab_size=6)  # counts+1: 4 -> 3, 5 -> 2, others 1; total 9
    assert loss == pytest.approx(-(math.log(3 / 9) + math.log(2 / 9)) / 2)


def test_steady_step_seconds_ignores_warm_up_and_bursts():
    times = [5.0] + [1.0] * 18 + [9.0]  # a slow first step, a burst of load at the end
    history = History({"wall_time": t} for t in itertools.accumulate(times))
    assert steady_step_seconds(history) == 1.0
    with pytest.raises(ValueError, match="train longer"):
        steady_step_seconds(History([{"wall_time": 1.0}]))


def test_source_ablation_sees_whether_the_target_depends_on_the_source():
    rows = synthetic_rows(40, packed=True)  # copy task: the target repeats the source
    model = make(ReferenceTransformer)
    same_source = [[5, 6, 7, 3] + r[r.index(3) + 1 :] for r in rows]
    assert source_ablation(model, same_source, 256)["gain"] == pytest.approx(0.0, abs=1e-6)
    train(model, rows, rows[:8], cfg(max_steps=120))
    trained = source_ablation(model, rows, 256)
    assert trained["gain"] > 0.5  # a copying model is lost without its own source
    with pytest.raises(ValueError, match="at least 2 rows"):
        source_ablation(model, rows[:1], 256)


def test_speaker_name_precision_counts_only_names_of_the_own_dialogue():
    dialogues = ["Amanda: hi\r\nJerry: hello", "Lila: coffee?\nTom Smith: sure", "Olivia: ok"]
    summaries = ["Amanda greets Jerry.", "Lila and Amanda want coffee.", "Nobody is named."]
    result = speaker_name_precision(summaries, dialogues)
    assert result == {"precision": pytest.approx(3 / 4), "mentions": 4}  # Amanda is not in dialogue 2
    assert speaker_name_precision(["Tom Smith agrees."], dialogues[1:2])["precision"] == 1.0
    assert speaker_name_precision(["no names"], ["Ann: x"]) == {"precision": 0.0, "mentions": 0}


def test_source_use_gate_measures_reading_and_needs_all_three_numbers():
    from datasets import Dataset

    rows = synthetic_rows(60, packed=True)  # the target repeats the source: reading is everything
    test = Dataset.from_dict({"input_ids": rows[:20], "dialogue": ["Ann: x"] * 20})
    model = make(ReferenceTransformer)
    untrained = source_use(model, rows[:20], test, _WordTokenizer(), max_new_tokens=4)
    assert not untrained["reads_source"] and untrained["ablation_gain_nats"] < 0.05
    train(model, rows, rows[:8], cfg(max_steps=120))
    trained = source_use(model, rows[:20], test, _WordTokenizer(), max_new_tokens=12)
    assert trained["ablation_gain_nats"] > 0.3  # measured 0.48
    assert trained["distinct_share_greedy"] > untrained["distinct_share_greedy"]
    assert not trained["reads_source"]  # it names no speaker: the gate needs all three
    assert trained["thresholds"] == {"gain": 0.3, "distinct": 0.9, "names": 0.9}


class _WordTokenizer:
    """Decodes ids as words, so that a summary of other ids is another string."""

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(f"w{t}" for t in row if t > 3) for row in rows]


def test_longest_3_keeps_dialogue_order():
    dialogue = "A: hi\nB: a much longer line here\nA: medium line\nB: ok\nA: the longest line of them all"
    assert (
        longest_3(dialogue) == "B: a much longer line here\nA: medium line\nA: the longest line of them all"
    )


def test_last_quarter_improvement_marks_curves_that_have_not_flattened():
    def history(losses):
        return History({"step": 100 * (i + 1), "val_loss": v} for i, v in enumerate(losses))

    still = history([6.0, 5.0, 4.5, 4.0])  # at step 300 (3/4 of 400): 4.5, then 4.0
    flat = history([6.0, 5.0, 4.05, 4.0])
    assert last_quarter_improvement(still) == pytest.approx(0.5 / 4.5)
    assert curve(flat) == [[100, 6.0], [200, 5.0], [300, 4.05], [400, 4.0]]
    assert flattened(flat) and not flattened(still)
    assert math.isnan(last_quarter_improvement(history([5.0])))  # no evaluation before the last quarter
