"""The loss: the plain cross-entropy and the fused CPU version must agree in value and in every gradient."""

import pytest
import torch
from torch import nn

from reftx_lib import ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.model.transformer import cross_entropy
from reftx_lib.train import loss as loss_module
from reftx_lib.train.loss import fused_head_cross_entropy, training_loss

V = 50
TINY = dict(vocab_size=V, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.0, max_len=64)
MODELS = [ReferenceDecoderOnly, ReferenceTransformer]


def packed_batch():
    """Packed source [SEP] target rows of different lengths, right-padded with 0."""
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(4, V, (n,), generator=g).tolist() for n in (9, 14, 6, 11, 13)]
    rows = [r[: len(r) // 2] + [3] + r[len(r) // 2 :] for r in rows]
    width = max(map(len, rows))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("pad", [0, 5])
def test_loss_ignores_pad_and_negative_labels_for_any_pad_id(pad, fused):
    """pad 0 takes the clamp path, any other pad the masked_fill path; fused or not, both match a manual
    mean."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 4, 8, requires_grad=True)
    head = torch.randn(V, 8, requires_grad=True)
    labels = torch.tensor([[7, pad, -100, 9], [pad, 11, 12, -100]])
    keep = (labels != pad) & (labels >= 0)
    out = (
        fused_head_cross_entropy(hidden, head, labels, pad)
        if fused
        else cross_entropy(hidden @ head.t(), labels, pad)
    )
    torch.testing.assert_close(
        out["loss"], nn.functional.cross_entropy((hidden @ head.t())[keep], labels[keep])
    )
    assert int(out["n_tokens"]) == 4


@pytest.mark.parametrize("rows_per_chunk", [1, 6, 64])
def test_fused_loss_gradients_equal_the_plain_ones_for_any_chunking(monkeypatch, rows_per_chunk):
    """10 rows of d_model 4 in chunks of 4+4+2 (a chunk holds at least d_model rows), 6+4, and all 10."""
    monkeypatch.setattr(loss_module, "LOSS_CHUNK_BYTES", rows_per_chunk * V * 4)
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4, requires_grad=True)
    head = torch.randn(V, 4, requires_grad=True)
    labels = torch.randint(0, V, (2, 5))
    labels[0, 1] = -100
    grads = []
    for fn in (
        lambda: cross_entropy(hidden @ head.t(), labels, 0),
        lambda: fused_head_cross_entropy(hidden, head, labels, 0),
    ):
        out = fn()
        (2.5 * out["loss"]).backward()  # an upstream gradient other than 1 must scale both gradients
        grads.append((out["loss"].detach(), hidden.grad.clone(), head.grad.clone()))
        hidden.grad = head.grad = None
    for plain, fused in zip(*grads):
        torch.testing.assert_close(fused, plain)


def test_no_counted_label_gives_nan_on_both_paths():
    """A mean over zero tokens is undefined: both paths say so with NaN (the trainer then stops)."""
    hidden = torch.randn(1, 3, 8, requires_grad=True)
    head = torch.randn(V, 8, requires_grad=True)
    labels = torch.tensor([[0, -100, 0]])
    assert torch.isnan(cross_entropy(hidden @ head.t(), labels, 0)["loss"])
    assert torch.isnan(fused_head_cross_entropy(hidden, head, labels, 0)["loss"])


@pytest.mark.parametrize("cls", MODELS)
def test_training_without_logits_takes_the_fused_path_and_gives_the_same_gradients(cls, monkeypatch):
    """training_loss on CPU fuses head and loss: the loss and every gradient of forward(labels=...)."""
    monkeypatch.setattr(loss_module, "LOSS_CHUNK_BYTES", 4 * V * 4)  # chunks of d_model = 32 rows: several
    calls = []
    real = loss_module.fused_head_cross_entropy
    monkeypatch.setattr(loss_module, "fused_head_cross_entropy", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    model = cls(**TINY).train()
    ids = packed_batch()
    results = []
    for fused in (False, True):
        model.zero_grad(set_to_none=True)
        out = training_loss(model, {"input_ids": ids, "labels": ids}) if fused else model(ids, labels=ids)
        out["loss"].backward()
        assert ("logits" in out) != fused
        results.append(
            (
                out["loss"].detach(),
                int(out["n_tokens"]),
                {n: p.grad.clone() for n, p in model.named_parameters()},
            )
        )
    assert len(calls) == 1, "training_loss on CPU must use the fused loss"
    (plain_loss, plain_n, plain_grads), (fused_loss, fused_n, fused_grads) = results
    torch.testing.assert_close(fused_loss, plain_loss)
    assert fused_n == plain_n
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, msg=lambda m, name=name: f"{name}: {m}")


def test_plain_path_without_gradients_or_under_autocast(monkeypatch):
    """Evaluation (no_grad) and autocast keep the plain loss: the fused one is for float32 training only."""
    calls = []
    real = loss_module.fused_head_cross_entropy
    monkeypatch.setattr(loss_module, "fused_head_cross_entropy", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    model = ReferenceDecoderOnly(**TINY)
    ids = packed_batch()
    inputs = {"input_ids": ids, "labels": ids}
    with torch.no_grad():
        no_grad = training_loss(model, inputs)["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        training_loss(model, inputs)
    assert calls == []
    torch.testing.assert_close(no_grad, model(ids, labels=ids)["loss"].detach())


def test_training_loss_needs_labels():
    model = ReferenceDecoderOnly(**TINY)
    with pytest.raises(ValueError, match="training_loss needs labels"):
        training_loss(model, {"input_ids": packed_batch()})


def test_fused_loss_gradients_survive_a_retained_graph():
    """With an upstream gradient of 1 the stored gradients are handed over as they are. The head also
    gets a second gradient (as a tied embedding does), which autograd adds to the first: a second
    backward through the retained graph must find the stored ones unchanged, so every gradient doubles."""
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 4, requires_grad=True)
    head = torch.randn(V, 4, requires_grad=True)
    labels = torch.randint(0, V, (2, 5))
    loss = fused_head_cross_entropy(hidden, head, labels, 0)["loss"] + head.sum()
    loss.backward(retain_graph=True)
    once = hidden.grad.clone(), head.grad.clone()
    loss.backward()
    torch.testing.assert_close(hidden.grad, 2 * once[0])
    torch.testing.assert_close(head.grad, 2 * once[1])
