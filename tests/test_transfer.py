"""Exp 5 conversion tests on a tiny decoder-only model (d_model 32, 2 layers, 4 heads, vocab 50)."""

import pytest
import torch

from course.transfer import convert_decoder_only_to_encoder_decoder
from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer

V = 50
TINY = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0, max_len=32)


def pretrained(seed=0):
    """A decoder-only model whose weights are clearly not a fresh init (every tensor perturbed)."""
    torch.manual_seed(seed)
    model = ReferenceDecoderOnly(**TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def convert(dec, seed=1, **kw):
    torch.manual_seed(seed)
    return convert_decoder_only_to_encoder_decoder(dec, **kw)


def fresh(config, seed=1):
    torch.manual_seed(seed)
    return ReferenceTransformer(config=config)


def pairs(model, dec, part):
    """(converted module, pretrained module) pairs that ``part`` ("encoder" / "decoder") copies."""
    out = []
    for i, src in enumerate(dec.layers):
        if part == "encoder":
            enc = model.encoder_layers[i]
            out += [
                (enc.self_attn, src.self_attn),
                (enc.self_norm, src.self_norm),
                (enc.ffn, src.ffn),
                (enc.ffn_norm, src.ffn_norm),
            ]
        else:
            dst = model.decoder_layers[i]
            out += [
                (dst.self_attn, src.self_attn),
                (dst.self_norm, src.self_norm),
                (dst.ffn, src.ffn),
                (dst.ffn_norm, src.ffn_norm),
            ]
    out.append((model.encoder_norm if part == "encoder" else model.decoder_norm, dec.norm))
    return out


def assert_copied(pairs_):
    n = 0
    for dst, src in pairs_:
        for (name, a), (_, b) in zip(dst.named_parameters(), src.named_parameters()):
            assert torch.equal(a, b), name
            assert a.data_ptr() != b.data_ptr()  # a copy, not a shared tensor
            n += 1
    assert n > 0


def params(module):
    return dict(module.named_parameters())


def assert_fresh(model, reference, prefix):
    """Every parameter under ``prefix`` equals the same-seeded fresh model's."""
    checked = 0
    fresh_params = params(reference)
    for name, p in model.named_parameters():
        if name.startswith(prefix):
            assert torch.equal(p, fresh_params[name]), name
            checked += 1
    assert checked > 0


def test_copied_weights_are_identical():
    dec = pretrained()
    model = convert(dec)
    assert isinstance(model, ReferenceTransformer)
    assert model.config == dec.config
    assert_copied(pairs(model, dec, "encoder"))
    assert_copied(pairs(model, dec, "decoder"))
    assert torch.equal(model.embed.weight, dec.embed.weight)
    assert model.lm_head.weight is model.embed.weight  # the tied head follows the embedding
    for layer, src in zip(model.decoder_layers, dec.layers):  # cross-attention from self-attention
        assert_copied([(layer.cross_attn, src.self_attn), (layer.cross_norm, src.self_norm)])


def test_random_cross_attention_differs_from_self_attention_and_is_fresh():
    dec = pretrained()
    model = convert(dec, cross_init="random")
    reference = fresh(model.config)
    for i, (layer, src) in enumerate(zip(model.decoder_layers, dec.layers)):
        assert not torch.equal(layer.cross_attn.in_proj.weight, src.self_attn.in_proj.weight)
        assert not torch.equal(layer.cross_attn.out_proj.weight, src.self_attn.out_proj.weight)
        assert_fresh(model, reference, f"decoder_layers.{i}.cross_")
    assert_copied(pairs(model, dec, "decoder"))  # the rest of the decoder is still transferred


@pytest.mark.parametrize("init_encoder,init_decoder", [(True, False), (False, True)])
def test_ablations_leave_the_other_part_at_fresh_init(init_encoder, init_decoder):
    dec = pretrained()
    model = convert(dec, init_encoder=init_encoder, init_decoder=init_decoder)
    reference = fresh(model.config)
    copied, untouched = ("encoder", "decoder") if init_encoder else ("decoder", "encoder")
    assert_copied(pairs(model, dec, copied))
    assert_fresh(model, reference, f"{untouched}_")  # layers and final norm
    assert torch.equal(model.embed.weight, dec.embed.weight)  # shared by both parts: always copied


def test_no_init_at_all_is_a_fresh_model():
    dec = pretrained()
    model = convert(dec, init_encoder=False, init_decoder=False, init_embedding=False)
    reference = fresh(model.config)
    for name, p in model.named_parameters():
        assert torch.equal(p, params(reference)[name]), name


def test_embedding_only_copies_the_embedding_and_nothing_else():
    dec = pretrained()
    model = convert(dec, init_encoder=False, init_decoder=False)
    reference = fresh(model.config)
    assert torch.equal(model.embed.weight, dec.embed.weight)
    for name, p in model.named_parameters():
        if name != "embed.weight":
            assert torch.equal(p, params(reference)[name]), name


def test_layers_without_the_embedding_keep_a_fresh_embedding():
    dec = pretrained()
    model = convert(dec, init_embedding=False)
    assert torch.equal(model.embed.weight, fresh(model.config).embed.weight)
    assert_copied(pairs(model, dec, "encoder") + pairs(model, dec, "decoder"))


def test_converted_model_runs_forward_and_generate_with_a_longer_max_len():
    dec = pretrained()
    model = convert(dec, max_len=64).eval()
    assert model.config.max_len == 64 and dec.config.max_len == 32
    src = torch.randint(4, V, (2, 40))  # longer than the pretrained max_len: positions are sinusoidal
    tgt = torch.cat([torch.randint(4, V, (2, 5)), torch.full((2, 1), 2)], dim=1)
    ids = torch.cat([src, torch.full((2, 1), 3), tgt], dim=1)
    out = model(ids, labels=ids)
    assert out["logits"].shape == (2, 6, V) and torch.isfinite(out["loss"])
    new = model.generate(src, max_new_tokens=5, num_beams=2)
    assert new.shape[0] == 2 and 1 <= new.shape[1] <= 5
    out["loss"].backward()  # trainable end to end
    assert model.decoder_layers[0].cross_attn.in_proj.weight.grad is not None


def test_conversion_leaves_the_pretrained_model_unchanged():
    dec = pretrained()
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    model = convert(dec)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    for k, v in dec.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bad_arguments_raise():
    dec = pretrained()
    with pytest.raises(ValueError, match="cross_init"):
        convert_decoder_only_to_encoder_decoder(dec, cross_init="zeros")
    with pytest.raises(TypeError, match="ReferenceDecoderOnly"):
        convert_decoder_only_to_encoder_decoder(ReferenceTransformer(**TINY))
    with pytest.raises(ValueError, match="max_len"):
        convert_decoder_only_to_encoder_decoder(dec, max_len=16)


def test_every_variant_starts_from_the_same_fresh_weights_where_it_copies_nothing():
    from course.transfer import EQUAL_COMPUTE, TRANSFER_VARIANTS, copied_share, transfer_model

    dec = pretrained()
    scratch = transfer_model("scratch", dec, seed=3)
    assert params(scratch).keys() == params(transfer_model(EQUAL_COMPUTE, dec, seed=3)).keys()
    shares = {v: copied_share(transfer_model(v, dec, seed=3), dec) for v in TRANSFER_VARIANTS}
    assert shares["scratch"]["share of parameters copied"] == 0
    assert shares["transfer"]["share of parameters copied"] == 1
    assert shares["embedding_only"]["encoder tensors copied"] == 0
    assert shares["embedding_only"]["decoder tensors copied"] == 0
    assert 0 < shares["embedding_only"]["share of parameters copied"] < 1
    enc_only = transfer_model("encoder_only", dec, seed=3)
    for name, p in enc_only.named_parameters():
        if name.startswith("decoder"):  # not copied: the very tensor the scratch model starts from
            assert torch.equal(p, params(scratch)[name]), name
    with pytest.raises(ValueError, match="unknown Exp 5 variant 'both'"):
        transfer_model("both", dec)


def test_transfer_summary_judges_differences_against_twice_the_seed_noise():
    from course.transfer import transfer_report, transfer_summary

    runs = [
        ("scratch", 0.1, 0, 5.00),
        ("scratch", 0.1, 1, 5.02),  # noise 0.02: a verdict needs more than 0.04
        ("transfer", 0.1, 0, 4.80),
        ("transfer", 0.1, 1, 4.81),
        ("scratch_equal_compute", 0.1, 0, 4.83),  # transfer better by 0.025: within the noise
        ("embedding_only", 0.1, 0, 4.90),
        ("scratch", 1.0, 0, 4.50),
        ("transfer", 1.0, 0, 4.60),  # worse by 0.1: hurts
        ("scratch_equal_compute", 1.0, 0, 4.40),
    ]
    records = [dict(variant=v, fraction=f, seed=s, val_loss=loss) for v, f, s, loss in runs]
    summary = transfer_summary(records)
    assert summary["noise"] == pytest.approx(0.02)
    small, full = summary["fractions"]["0.1"], summary["fractions"]["1"]
    assert small["transfer_gain"] == pytest.approx(0.205)  # means over seeds: 5.01 - 4.805
    assert small["gain_per_seed"] == pytest.approx({0: 0.2, 1: 0.21})
    assert small["pretraining_helps"] == "helps"
    assert small["beats_equal_compute"].startswith("cannot decide")
    assert small["embedding_share_of_gain"] == pytest.approx(0.11 / 0.205)
    assert full["pretraining_helps"] == "hurts" and full["beats_equal_compute"].startswith("no")
    assert "embedding_share_of_gain" not in full  # no gain to share
    report = transfer_report(summary)
    assert "10% of SAMSum" in report and "100% of SAMSum" in report and "seed 1: +0.210" in report
    one_seed = transfer_summary([r for r in records if r["seed"] == 0])
    assert one_seed["noise"] is None
    assert one_seed["fractions"]["0.1"]["pretraining_helps"].startswith("cannot decide: one seed")


def test_exp5_plan_repeats_scratch_and_transfer_at_the_smallest_fraction_and_rejects_unknown_variants():
    from course.budgets import get_budget
    from course.experiments import equal_compute_steps, exp2_settings, exp5_plan, exp5_settings

    cfg = dict(fractions=[0.1, 1.0], seeds=[0, 1], variants={"1.0": ["scratch", "scratch_equal_compute"]})
    plan = exp5_plan(cfg, seed=0)
    assert [(f, v, s) for f, v, s in plan if s == 1] == [(0.1, "scratch", 1), (0.1, "transfer", 1)]
    assert [v for f, v, s in plan if f == 1.0] == ["scratch", "scratch_equal_compute"]
    assert len([1 for f, v, s in plan if f == 0.1 and s == 0]) == 7  # every variant and the control
    with pytest.raises(ValueError, match="unknown variants \\['both'\\]"):
        exp5_plan({**cfg, "variants": {"0.1": ["both"]}})
    settings = get_budget("full")
    pre = exp2_settings(settings)
    pre_tokens = pre["max_steps"] * pre["batch_tokens"]  # Exp 2 pretraining
    steps = equal_compute_steps(settings)
    assert steps * exp5_settings(settings)["batch_tokens"] == pre_tokens + 600 * 2048


def test_rouge_report_judges_rouge_against_its_seed_noise_and_names_a_repeating_summarizer():
    from course.transfer import rouge_report

    def run(variant, seed, rouge1, distinct, fraction=0.1):
        return dict(variant=variant, fraction=fraction, seed=seed, rouge1=rouge1, distinct_share=distinct)

    records = [run("scratch", 0, 10.0, 0.9), run("scratch", 1, 11.0, 0.9), run("transfer", 0, 14.0, 0.9)]
    report = rouge_report(records)
    assert "1.0 points" in report and "transfer - scratch +3.5 points: transfer scores higher" in report
    assert "generic sentence" not in report
    close = rouge_report([*records[:2], run("transfer", 0, 11.5, 0.9)])
    assert "cannot decide: +1.0 points is within twice the seed noise (2.0)" in close
    generic = rouge_report(
        [run("scratch", 0, 16.0, 0.01), run("scratch", 1, 16.2, 0.02), run("transfer", 0, 11.0, 0.9)]
    )
    assert "scratch scores higher" in generic
    assert "scratch repeats its summaries" in generic
    assert "transfer repeats" not in generic
    assert "unknown (one seed)" in rouge_report([run("scratch", 0, 1.0, 1.0), run("transfer", 0, 2.0, 1.0)])
