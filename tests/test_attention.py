"""Attention tools on tiny models (d_model 32, 1-2 layers, 2 heads) and a tiny BPE tokenizer.

Statistics are checked on hand-built attention whose answers are known (uniform,
one-hot diagonal, perfectly monotonic), and the plumbing (unpadding, batching,
bertviz layout, widgets, figures) on tiny random models.
"""

import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # tests only: no display

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import course.attention as course_attention
from course.attention import (
    corpus_contrast,
    cross_headlines,
    cross_profile,
    monotonicity,
    plot_stat_distributions,
    speaker_mass,
    speaker_token_mask,
    stats_over_dataset,
)
from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.attention.explorer import AttentionExplorer, to_bertviz
from reftx_lib.attention.extract import AttentionRecord, extract_attention, token_labels
from reftx_lib.attention.plots import plot_attention, plot_attention_grid
from reftx_lib.attention.stats import attention_stats, stack_records, uniform_baseline

REPO = Path(__file__).resolve().parents[1]
DIALOGUE = "Amanda: I baked cookies. Do you want some?\nJerry: Sure! Amanda: is a name here, not a speaker."
SUMMARY = "Amanda baked cookies and will bring Jerry some."
TEXTS = [DIALOGUE, SUMMARY, "the cat sat on the mat.\nthe dog sat on the log."]


@pytest.fixture(scope="module")
def tok():
    """Byte-level BPE with the course's special ids: <pad>=0 <bos>=1 <eos>=2 <sep>=3."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<bos>", "<eos>", "<sep>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TEXTS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", sep_token="<sep>"
    )


def _tiny(cls, tok, n_layers):
    """d_model 32, 2 heads; attention input projections scaled up so attention is peaky, not near-uniform.

    Matching names by pattern (``*attn.*proj.weight`` except ``out_proj``) works for fused
    and separate q/k/v projections alike.
    """
    torch.manual_seed(0)
    model = cls(vocab_size=len(tok), d_model=32, n_layers=n_layers, n_heads=2, dropout=0.0, max_len=128)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "attn." in name and "proj" in name and "out_proj" not in name and name.endswith("weight"):
                p.mul_(15)
    return model


@pytest.fixture(scope="module")
def encdec(tok):
    return _tiny(ReferenceTransformer, tok, n_layers=2)


@pytest.fixture(scope="module")
def deconly(tok):
    return _tiny(ReferenceDecoderOnly, tok, n_layers=1)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def rows(tok):
    """Packed rows source <sep> target <eos> of different lengths (so batches need padding)."""
    pairs = [(DIALOGUE, SUMMARY), (SUMMARY, "the cat sat."), (TEXTS[2], SUMMARY), ("the mat.", "the dog.")]
    return [ids(tok, s) + [3] + ids(tok, t) + [2] for s, t in pairs]


def record_of(kind, att):
    """A hand-built record holding one kind of attention (L, H, Tq, Tk); labels are positions."""
    tq, tk = att.shape[2:]
    tokens = [str(i) for i in range(max(tq, tk))]
    src = None if kind == "decoder" else tokens[:tk]
    return AttentionRecord(
        attentions={kind: att},
        decoder_ids=list(range(tq)),
        decoder_tokens=tokens[:tq],
        source_ids=None if src is None else list(range(tk)),
        source_tokens=src,
    )


# ---------------------------------------------------------------- extraction
def test_extract_shapes_unpadding_and_labels(encdec, tok, rows):
    row = rows[1]
    cut = row.index(3)
    rec = extract_attention(encdec, row + [0, 0, 0], tok)  # trailing padding is ignored
    s, t = cut, len(row) - cut - 1
    assert {k: v.shape for k, v in rec.attentions.items()} == {
        "encoder": (2, 2, s, s),
        "decoder": (2, 2, t, t),
        "cross": (2, 2, t, s),
    }
    assert rec.decoder_ids == [1] + row[cut + 1 : -1]  # decoder inputs: [BOS] + target[:-1]
    assert rec.query_labels("cross")[0] == "<bos>" and rec.key_labels("cross") == rec.source_tokens
    assert rec.source_tokens[-1] == "." and "▁sat" in rec.decoder_tokens  # spaces shown as ▁
    pair = extract_attention(encdec, (torch.tensor(row[:cut]), row[cut + 1 :]), tok)
    for kind in rec.kinds:
        np.testing.assert_allclose(pair.attentions[kind], rec.attentions[kind], atol=1e-6)
    assert token_labels(ids(tok, "a\nb"), tok) == ["a", "\\n", "b"]


def test_rows_sum_to_one_and_decoder_is_causal(encdec, deconly, tok, rows):
    for model in (encdec, deconly):
        rec = extract_attention(model, rows[0], tok)
        for att in rec.attentions.values():
            np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
        dec = rec.attention("decoder")
        assert np.all(np.triu(dec, k=1) == 0)  # row i sees keys 0..i only
    assert extract_attention(deconly, rows[0], tok).kinds == ["decoder"]
    assert extract_attention(deconly, rows[0], tok).attention("decoder").shape == (
        1,
        2,
        len(rows[0]),
        len(rows[0]),
    )


def test_clear_errors(encdec, tok, rows):
    with pytest.raises(ValueError, match="no SEP"):
        extract_attention(encdec, rows[0][: rows[0].index(3)], tok)
    rec = extract_attention(encdec, rows[0], tok)
    with pytest.raises(ValueError, match="allowed values"):
        rec.attention("self")
    with pytest.raises(ValueError, match="layer 5 out of range"):
        rec.matrix("cross", 5)


# ---------------------------------------------------------------- statistics
def test_uniform_attention_has_entropy_one_and_matches_baseline():
    t = 6
    enc = np.full((1, 2, t, t), 1 / t)
    causal = np.tril(np.ones((t, t))) / np.arange(1, t + 1)[:, None]  # row i: 1/(i+1) on keys 0..i
    for kind, att in (("encoder", enc), ("decoder", np.broadcast_to(causal, (1, 2, t, t)).copy())):
        rec = record_of(kind, att)
        stats, base = attention_stats(rec, kind), uniform_baseline(rec, kind)
        np.testing.assert_allclose(stats["entropy"], 1.0, atol=1e-5)
        for name in stats:
            np.testing.assert_allclose(stats[name], base[name], atol=1e-5)
    three = attention_stats(record_of("encoder", np.full((1, 1, 3, 3), 1 / 3)), "encoder")
    np.testing.assert_allclose(three["distance"], (1 + 2 / 3 + 1) / 3, atol=1e-6)  # mean |i - j|
    np.testing.assert_allclose(three["first"], 1 / 3, atol=1e-6)


def test_one_hot_diagonal_attention():
    eye = np.broadcast_to(np.eye(5), (2, 2, 5, 5)).copy()
    for kind in ("encoder", "decoder"):
        stats = attention_stats(record_of(kind, eye), kind)
        np.testing.assert_allclose(stats["diagonal"], 1.0)
        np.testing.assert_allclose(stats["entropy"], 0.0, atol=1e-6)
        np.testing.assert_allclose(stats["distance"], 0.0)
        np.testing.assert_allclose(stats["previous"], 0.0)
    prev = np.eye(5, k=-1)
    prev[0, 0] = 1.0  # row 0 of causal attention has no earlier token
    stats = attention_stats(record_of("decoder", prev[None, None]), "decoder")
    np.testing.assert_allclose(stats["previous"], 1.0)
    np.testing.assert_allclose(stats["distance"], 1.0)


def test_cross_monotonicity_and_alignment():
    t, s = 5, 8
    aligned = np.round(np.arange(t) * s / t).astype(int)  # 0 2 3 5 6: strictly increasing
    att = np.zeros((1, 2, t, s))
    att[0, 0, np.arange(t), aligned] = 1.0  # head 0: monotonic
    att[0, 1, np.arange(t), aligned[::-1]] = 1.0  # head 1: backwards
    record = record_of("cross", att)
    np.testing.assert_allclose(monotonicity(*stack_records(record, "cross")), [[[1.0, -1.0]]], atol=1e-6)
    assert attention_stats(record, "cross")["diagonal"][0, 0] == pytest.approx(1.0)


def test_speaker_mask_on_two_line_dialogue(tok, encdec):
    mask = speaker_token_mask(DIALOGUE, tok)
    src = ids(tok, DIALOGUE)
    names = tok.decode([i for i, m in zip(src, mask) if m])
    assert names == "AmandaJerry"  # the mid-line "Amanda:" is not a speaker; colons are not part of names
    np.testing.assert_array_equal(speaker_token_mask(src, tok), mask)  # ids give the same mask as text
    rec = extract_attention(encdec, (src, ids(tok, SUMMARY)), tok)
    assert speaker_mass(rec, mask).shape == (2, 2)  # (layers, heads)
    uniform = record_of("cross", np.full((1, 1, 4, len(src)), 1 / len(src)))
    assert speaker_mass(uniform, mask)[0, 0] == pytest.approx(mask.mean())
    on_names = np.zeros((1, 1, 3, len(src)))
    on_names[..., mask] = 1 / mask.sum()
    assert speaker_mass(record_of("cross", on_names), mask)[0, 0] == pytest.approx(1.0)


def test_stats_over_dataset_matches_records_and_is_deterministic(encdec, tok, rows):
    df = stats_over_dataset(encdec, rows, tok, n=3, batch_size=2, speakers=True, corpus="toy")
    assert len(df) == 3 * 3 * 2 * 2  # examples x kinds x layers x heads
    assert sorted(df["example"].unique()) == [0, 1, 2] and (df["corpus"] == "toy").all()
    again = stats_over_dataset(encdec, rows, tok, n=3, batch_size=3, speakers=True, corpus="toy")
    pd.testing.assert_frame_equal(df, again, atol=1e-6)
    rec = extract_attention(encdec, rows[2], tok)  # batched with padding above, alone here
    for kind in rec.kinds:
        part = df[(df.example == 2) & (df.kind == kind)].sort_values(["layer", "head"])
        expected = attention_stats(rec, kind)
        if kind == "cross":
            expected["monotonicity"] = monotonicity(*stack_records(rec, kind)).numpy()
        for name, value in expected.items():
            np.testing.assert_allclose(part[name].to_numpy(), value.reshape(-1), atol=1e-5)
    cross = df[df.kind == "cross"]
    assert (cross["uniform_monotonicity"] == 0).all()  # uniform attention walks nowhere
    cross0 = cross[cross.example == 0]
    assert cross0["uniform_speaker_mass"].iloc[0] == pytest.approx(
        speaker_token_mask(DIALOGUE, tok).mean(), abs=1e-6
    )
    sampled = stats_over_dataset(encdec, rows, tok, n=2, seed=1)
    assert sampled["example"].nunique() == 2


def test_cross_profile_on_hand_made_attention(monkeypatch):
    to_first = np.zeros((1, 2, 3, 4))
    to_first[..., 0] = 1.0  # every target row reads source token 0: profile [1, 0], dependence 0
    diagonal = np.broadcast_to(np.eye(4), (1, 2, 4, 4)).copy()  # tokens 0-1 | 2-3 per bin: profile [0.5, 0.5]
    records = {"first": record_of("cross", to_first), "diagonal": record_of("cross", diagonal)}
    monkeypatch.setattr(
        course_attention, "extract_attention", lambda model, example, tokenizer: records[example]
    )
    profile, dependence = cross_profile(None, ["first", "diagonal"], None, bins=2)
    np.testing.assert_allclose(profile, [0.75, 0.25])
    # a one-hot diagonal row against the mean row (1/4 everywhere): total variation 0.5 * (3/4 + 3 * 1/4)
    assert dependence == pytest.approx((0.0 + 0.75) / 2)


def test_cross_profile_is_the_mean_of_per_example_profiles(encdec, deconly, tok, rows):
    profile, dependence = cross_profile(encdec, rows, tok, bins=4)
    assert profile.shape == (4,) and profile.sum() == pytest.approx(1.0) and 0 < dependence < 1
    alone = [cross_profile(encdec, [row], tok, bins=4) for row in rows]
    np.testing.assert_allclose(profile, np.mean([p for p, _ in alone], axis=0), atol=1e-6)
    assert dependence == pytest.approx(np.mean([d for _, d in alone]), abs=1e-6)
    with pytest.raises(ValueError, match="no 'cross' attention"):
        cross_profile(deconly, rows[:1], tok)


def test_cross_headlines_are_the_datasets_means(encdec, tok, rows):
    from datasets import Dataset

    data = Dataset.from_dict({"input_ids": rows})
    head = cross_headlines(encdec, data, tok, n=3)
    cross = stats_over_dataset(encdec, data, tok, n=3).query("kind == 'cross'")
    assert head["entropy"] == pytest.approx(cross["entropy"].mean())
    assert head["query_dependence"] == pytest.approx(cross_profile(encdec, rows[:3], tok)[1])
    assert "speaker_ratio" not in head


def test_corpus_contrast_sets_the_effect_against_untrained_and_seed_spread():
    def stats(entropy, mono=0.0, dep=0.1):
        return {"entropy": entropy, "monotonicity": mono, "query_dependence": dep}

    untrained = {"samsum": stats(0.99), "rawtext": stats(0.98)}
    seeds = [stats(0.90), stats(0.91, mono=0.3)]
    table = corpus_contrast(stats(0.70, 0.5), stats(0.90), untrained, seeds)
    assert table.loc["entropy", "effect of training"] == pytest.approx(-0.21)
    assert table.loc["entropy", "verdict"] == "as hypothesised"  # sharper on SAMSum, beyond 2 x 0.01
    assert (
        table.loc["monotonicity", "verdict"] == "within noise"
    )  # no seed spread in it, but no effect either
    assert table.loc["query_dependence", "verdict"] == "within noise"
    backwards = corpus_contrast(stats(0.99), stats(0.70), untrained, seeds)
    assert backwards.loc["entropy", "verdict"] == "opposite to the hypothesis"
    one_seed = corpus_contrast(stats(0.70), stats(0.90), untrained, seeds[:1])
    assert one_seed.loc["entropy", "verdict"].startswith("cannot decide")


def test_stats_import_loads_no_plotting_or_widget_library():
    code = (
        "import sys, reftx_lib.attention.stats; "
        "print(sorted(m for m in ('ipywidgets', 'IPython', 'seaborn', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- export and plots
def test_bertviz_layout(encdec, deconly, tok, rows):
    rec = extract_attention(encdec, rows[1], tok)
    bv = to_bertviz(rec)
    s, t = len(rec.source_ids), len(rec.decoder_ids)
    assert [tuple(a.shape) for a in bv["encoder_attention"]] == [(1, 2, s, s)] * 2
    assert [tuple(a.shape) for a in bv["decoder_attention"]] == [(1, 2, t, t)] * 2
    assert [tuple(a.shape) for a in bv["cross_attention"]] == [(1, 2, t, s)] * 2
    assert bv["encoder_tokens"] == rec.source_tokens and bv["decoder_tokens"] == rec.decoder_tokens
    dec = to_bertviz(extract_attention(deconly, rows[0], tok))
    assert set(dec) == {"attention", "tokens"} and dec["attention"][0].shape == (
        1,
        2,
        len(rows[0]),
        len(rows[0]),
    )
    out = deconly(torch.tensor([rows[0]]), return_attention=True)
    assert to_bertviz(out, decoder_tokens=dec["tokens"])["attention"][0].shape == dec["attention"][0].shape
    with pytest.raises(ValueError, match="batch size 1"):
        to_bertviz(deconly(torch.tensor([rows[0], rows[0]]), return_attention=True))


def test_plots_return_figures_and_save_pngs(encdec, tok, rows, tmp_path):
    import matplotlib.pyplot as plt

    rec = extract_attention(encdec, rows[1], tok)
    fig = plot_attention(
        rec.matrix("cross", 0, 1),
        rec.query_labels("cross"),
        rec.key_labels("cross"),
        "cross",
        rows="target tokens",
        columns="source tokens",
    )
    assert isinstance(fig, Figure) and "rows = target tokens" in fig.axes[0].get_title()
    grid = plot_attention_grid(rec, "encoder", path=tmp_path / "figures" / "grid.png")
    assert len(grid.axes) == 2 * 2 + 1  # layers x heads + colour bar
    df = pd.concat(
        [
            stats_over_dataset(encdec, rows, tok, n=4, corpus="a"),
            stats_over_dataset(encdec, rows[::-1], tok, n=4, corpus="b"),
        ],
        ignore_index=True,
    )
    dist = plot_stat_distributions(df, "entropy", path=tmp_path / "dist.png")
    assert isinstance(dist, Figure)
    for name in ("figures/grid.png", "dist.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plt.close("all")


# ---------------------------------------------------------------- explorer
def test_explorer_reacts_to_widgets(encdec, deconly, tok, rows):
    explorer = AttentionExplorer(
        {"encoder-decoder": (encdec, rows, tok), "decoder-only": (deconly, rows, tok)}
    )
    assert explorer.widget.children and explorer.kind.options == ("encoder", "decoder", "cross")
    shown = explorer.current_matrix()
    steps = [
        (explorer.layer, 1),
        (explorer.head, 1),
        (explorer.kind, "cross"),
        (explorer.example, 2),
        (explorer.head, -1),
    ]
    for control, value in steps:
        control.value = value
        new = explorer.current_matrix()
        assert new.shape != shown.shape or not np.allclose(new, shown), control.description
        shown = new
    rec = explorer.record()
    np.testing.assert_allclose(shown, rec.attention("cross")[1].mean(0))  # layer 1, average of heads
    top = explorer.current_top_keys()
    explorer.query.value = len(explorer.query.options) - 1
    assert explorer.current_top_keys() != top and "top 5 keys" in explorer.top_keys.value
    explorer.source.value = "decoder-only"
    assert explorer.kind.options == ("decoder",) and explorer.layer.max == 0
    assert explorer.current_matrix().shape == (len(rows[2]), len(rows[2]))  # example index kept
    explorer.source.value = "encoder-decoder"
    assert explorer.record() is rec  # cached per (source, example)


def test_explorer_on_precomputed_records(encdec, tok, rows):
    records = [extract_attention(encdec, r, tok) for r in rows[:2]]
    explorer = AttentionExplorer({"saved": records})
    explorer.example.value = 1
    explorer.kind.value = "encoder"
    np.testing.assert_allclose(explorer.current_matrix(), records[1].attention("encoder")[0].mean(0))


def test_corpus_contrast_does_not_count_an_effect_that_only_the_untrained_control_makes():
    def stats(mono):
        return {"entropy": 0.9, "monotonicity": mono, "query_dependence": 0.1}

    untrained = {"samsum": stats(-0.30), "rawtext": stats(0.0)}  # random weights: SAMSum far less monotone
    seeds = [stats(0.0), stats(0.01)]
    table = corpus_contrast(stats(-0.01), stats(0.0), untrained, seeds)  # trained: SAMSum slightly *less*
    assert table.loc["monotonicity", "effect of training"] == pytest.approx(0.29)
    assert table.loc["monotonicity", "verdict"].startswith("cannot decide: only the untrained control")
    small = corpus_contrast(stats(0.01), stats(0.0), untrained, seeds)  # trained: the right sign, in noise
    assert small.loc["monotonicity", "verdict"].startswith("cannot decide: only the untrained control")
    real = corpus_contrast(stats(0.2), stats(0.0), untrained, seeds)
    assert real.loc["monotonicity", "verdict"] == "as hypothesised"
