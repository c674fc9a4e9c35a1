"""The FLOPs that "share of the matmul peak" uses are the FLOPs a training step computes.

``course.accounting.flops_per_token`` is a closed-form count; ``torch.utils.flop_counter`` counts the
matrix multiplies one forward and backward pass actually run. The explicit attention path
(``return_attention=True``) is used so that the counter sees QK^T and AV as matmuls (it does not count
the fused CPU attention kernel). Tiny configuration: the seed's Tiny widths with a small vocabulary.
"""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from course.accounting import flops_per_token
from course.report import flops_per_supervised_token
from reftx_lib import SEP_ID, ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.train.step import counted_targets, training_inputs

V, B, S, T = 512, 4, 48, 16  # vocabulary, rows, source and target lengths


def packed_rows() -> torch.Tensor:
    """(B, S + 1 + T) rows ``source [SEP] target`` of ordinary tokens, no padding."""
    src, tgt = torch.randint(4, V, (B, S)), torch.randint(4, V, (B, T))
    return torch.cat([src, torch.full((B, 1), SEP_ID), tgt], dim=1)


def counted_flops(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """FLOPs of one forward and backward pass (the plain head and loss) as torch counts them."""
    with FlopCounterMode(display=False) as counter:
        model(**training_inputs(model, ids), return_attention=True)["loss"].backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("kind", ["decoder-only", "encoder-decoder", "prefix LM"])
def test_the_flop_formula_matches_the_counted_step_within_5_percent(kind):
    torch.manual_seed(0)
    cls = ReferenceTransformer if kind == "encoder-decoder" else ReferenceDecoderOnly
    model = cls.from_size("tiny", vocab_size=V, dropout=0.0, prefix_lm=kind == "prefix LM")
    ids = packed_rows()
    rows = ids.tolist()
    predicted = flops_per_supervised_token(model, rows) * counted_targets(model, ids)
    counted = counted_flops(model, ids)
    assert abs(predicted / counted - 1) < 0.05, (kind, predicted, counted)


def test_the_encoder_decoder_is_costed_with_its_own_formula():
    """Before issue 29 the report's check (``hasattr(model, "encoder")``) never held, so an
    encoder-decoder was costed as a decoder-only model over its packed rows."""
    model = ReferenceTransformer.from_size("tiny", vocab_size=V)
    rows = packed_rows().tolist()
    assert flops_per_supervised_token(model, rows) == flops_per_token(model, src_len=S, tgt_len=T)
