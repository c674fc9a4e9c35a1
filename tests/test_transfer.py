"""Exp 5 conversion tests on a tiny decoder-only model (d_model 32, 2 layers, 4 heads, vocab 50)."""

import pytest
import torch

from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer, convert_decoder_only_to_encoder_decoder

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
                (enc.attn_block, src.self_block),
                (enc.ffn, src.ffn),
                (enc.ffn_block, src.ffn_block),
            ]
        else:
            dst = model.decoder_layers[i]
            out += [
                (dst.self_attn, src.self_attn),
                (dst.self_block, src.self_block),
                (dst.ffn, src.ffn),
                (dst.ffn_block, src.ffn_block),
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
        assert_copied([(layer.cross_attn, src.self_attn), (layer.cross_block, src.self_block)])


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
    model = convert(dec, init_encoder=False, init_decoder=False)
    reference = fresh(model.config)
    for name, p in model.named_parameters():
        assert torch.equal(p, params(reference)[name]), name


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
