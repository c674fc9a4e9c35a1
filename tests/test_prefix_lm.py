"""The prefix LM on tiny configurations: bidirectional over the source, causal after it, scored like the
encoder-decoder, and generating the same with and without a KV cache."""

import hashlib
import io

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from course.accounting import num_parameters
from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.model.layers import prefix_lm_mask
from reftx_lib.model.packing import check_batch
from reftx_lib.train.checkpoint import from_pretrained, load_model, save_pretrained
from reftx_lib.train.step import counted_targets, training_inputs

V = 50  # ids 4.. are ordinary tokens, 0-3 are <pad> <bos> <eos> <sep>
TINY = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0, max_len=64)
PREFIX_LM = "prefix LM"  # the decoder-only model with prefix_lm=True


def make(cls=PREFIX_LM, seed=0):
    torch.manual_seed(seed)
    if cls == PREFIX_LM:
        return ReferenceDecoderOnly(**TINY, prefix_lm=True).eval()
    return cls(**TINY).eval()


def rows(sources, targets):
    """[BOS] + source + [SEP] + target + [EOS], right-padded with 0."""
    out = [[1, *s, 3, *t, 2] for s, t in zip(sources, targets)]
    width = max(map(len, out))
    return torch.tensor([r + [0] * (width - len(r)) for r in out])


SRC, TGT = [[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14, 15, 16, 17]]


def test_mask_reads_the_prefix_both_ways_and_the_rest_causally():
    mask = prefix_lm_mask(torch.tensor([3]), 5)[0, 0]  # (T, T)
    expected = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_a_later_source_token_changes_earlier_positions_but_a_target_token_does_not():
    model = make()
    ids = rows(SRC[:1], TGT[:1])  # [BOS 5 6 7 8 SEP 11 12 13 EOS]
    base = model(ids)["logits"]
    changed_src = ids.clone()
    changed_src[0, 4] = 20  # the last source token
    assert not torch.allclose(model(changed_src)["logits"][0, 1], base[0, 1])  # seen from position 1
    changed_tgt = ids.clone()
    changed_tgt[0, 7] = 20  # a target token: positions before it must not see it
    assert torch.allclose(model(changed_tgt)["logits"][0, :7], base[0, :7], atol=1e-6)
    causal = make(ReferenceDecoderOnly)  # the same weights read causally: position 1 is blind to token 4
    assert torch.allclose(causal(changed_src)["logits"][0, 1], causal(ids)["logits"][0, 1], atol=1e-6)


def test_loss_counts_exactly_the_tokens_after_sep_like_the_encoder_decoder():
    model = make()
    ids = rows(SRC, TGT)
    with torch.no_grad():
        out = model(ids, labels=ids)
    logits, want = out["logits"], []
    for b, (s, t) in enumerate(zip(SRC, TGT)):
        start = len(s) + 2  # first target position: after BOS, source and SEP
        for k in range(start, start + len(t) + 1):  # target tokens and EOS
            want.append(F.cross_entropy(logits[b, k - 1], ids[b, k], reduction="none"))
    assert float(out["loss"]) == pytest.approx(float(torch.stack(want).mean()), abs=1e-5)
    assert counted_targets(model, ids) == len(want)
    packed = torch.tensor([[*s, 3, *t, 2] + [0] * (8 - len(s) - len(t)) for s, t in zip(SRC, TGT)])
    assert counted_targets(model, ids) == counted_targets(make(ReferenceTransformer), packed)
    # any decoder-only model reads rows as a prefix LM when given each row's prefix length
    with torch.no_grad():
        plain = make(ReferenceDecoderOnly)(ids, labels=ids, prefix_len=torch.tensor([6, 4]))
    assert float(plain["loss"]) == pytest.approx(float(out["loss"]), abs=1e-6)


def test_same_parameters_as_the_decoder_only_model_and_checkpoints_know_it(tmp_path):
    assert num_parameters(make()) == num_parameters(make(ReferenceDecoderOnly))
    model = make()
    save_pretrained(model, tmp_path)
    assert from_pretrained(tmp_path).config.prefix_lm  # a checkpoint rebuilds it as a prefix LM
    twin = make(ReferenceDecoderOnly)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))  # same init


def test_a_checkpoint_from_before_the_rewrite_is_refused_with_the_fix(tmp_path):
    """Before issue 28 the prefix LM was a class of its own and the layer norms sat in residual wrappers;
    such a checkpoint (format reftx-checkpoint-2) is refused with "Train again", never half-loaded."""
    model = make()
    state = io.BytesIO()
    torch.save({"format": "reftx-checkpoint-2", "model_class": "ReferencePrefixLM"}, state)
    (tmp_path / "old.pt").write_bytes(state.getvalue())
    header = {"format": "reftx-checkpoint-2", "state_sha256": hashlib.sha256(state.getvalue()).hexdigest()}
    weights = {k.replace("_norm.", "_block.norm."): v for k, v in model.state_dict().items()}
    save_file(
        {k: v for k, v in weights.items() if k != "lm_head.weight"}, tmp_path / "old.safetensors", header
    )
    with pytest.raises(ValueError, match="before the model's layers were rewritten.*Train again"):
        load_model(tmp_path / "old.pt")


@pytest.mark.parametrize("beams", [1, 3])
def test_kv_cache_matches_no_cache(beams):
    model = make()
    prompt = torch.tensor([[1, 5, 6, 7, 8, 3], [1, 9, 10, 11, 12, 3]])  # [BOS] source [SEP]
    a = model.generate(prompt, max_new_tokens=10, num_beams=beams, use_cache=True)
    b = model.generate(prompt, max_new_tokens=10, num_beams=beams, use_cache=False)
    assert torch.equal(a, b)


def test_greedy_generation_matches_argmax_of_forward_with_the_prompt_as_prefix():
    model = make()
    prompt = torch.tensor([[1, 5, 6, 7, 3]])
    new = model.generate(prompt, max_new_tokens=3)
    seq = prompt
    for _ in range(3):  # the full forward sees the prompt's SEP, so its prefix is the prompt
        seq = torch.cat([seq, model(seq)["logits"][:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(new, seq[:, 4 + 1 :])


def test_rows_without_sep_are_refused_with_the_layout_to_use():
    model = make()
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    with pytest.raises(ValueError, match="no SEP token.*layout 'prefix'"):
        check_batch(model, ids, labels=ids)
    with pytest.raises(ValueError, match="no SEP token"):
        training_inputs(model, ids)
