"""What a model costs, from closed-form formulas: its parameters and its training FLOPs per token.

The experiments compare architectures at equal parameters or equal compute, so both counts are written
out here term by term (tests check the parameter formula against the modules, and the FLOPs against
the matrix multiplies), outside the model a student reads.
"""

from __future__ import annotations

from reftx_lib.model.transformer import BaseLanguageModel

PARTS = (
    "embeddings",
    "positions",
    "lm_head",
    "encoder_self_attention",
    "decoder_self_attention",
    "cross_attention",
    "ffn",
    "norms",
)


def num_parameters(model: BaseLanguageModel) -> dict[str, int]:
    """Parameter counts of ``model`` by part; the parts in ``PARTS`` are disjoint and add up to ``total``.

    ``positions`` is 0 for sinusoids and ``lm_head`` 0 when tied. ``encoder`` and ``decoder`` are stack
    totals; ``non_embedding`` leaves out the token and position embeddings and any untied output
    matrix (Kaplan et al. 2020's N).
    """
    c = model.config
    d, f, n, enc = c.d_model, c.d_ff, c.n_layers, model.is_encoder_decoder
    attn = 4 * d * d + 4 * d  # q, k, v and out projections with biases
    ffn = 2 * d * f + f + d
    ln = 2 * d
    counts = {
        "embeddings": c.vocab_size * d,
        "positions": c.max_len * d if c.positions == "learned" else 0,
        "lm_head": 0 if c.tie_embeddings else c.vocab_size * d,
        "encoder_self_attention": n * attn if enc else 0,
        "decoder_self_attention": n * attn,
        "cross_attention": n * attn if enc else 0,
        "ffn": (2 if enc else 1) * n * ffn,
        # two or three a layer, one after each stack, and the embedding norm (``embed_norm``) if any
        "norms": (5 * n + 2 if enc else 2 * n + 1) * ln + (ln if c.embed_norm else 0),
    }
    counts["encoder"] = n * (attn + ffn + 2 * ln) + ln if enc else 0
    counts["decoder"] = n * (attn * (2 if enc else 1) + ffn + (3 if enc else 2) * ln) + ln
    counts["total"] = sum(counts[k] for k in PARTS)
    counts["non_embedding"] = counts["total"] - counts["embeddings"] - counts["positions"] - counts["lm_head"]
    return counts


def flops_per_token(
    model: BaseLanguageModel,
    seq_len: int | None = None,
    *,
    src_len: int | None = None,
    tgt_len: int | None = None,
) -> float:
    """Training FLOPs (forward + backward = 3 x forward) per *predicted* token.

    Decoder-only, context T (Kaplan et al. 2020; PaLM appendix B):
        6 * N_mm + 12 * L * D * T
    where N_mm = L * (4 D^2 + 2 D F) + D V are the weights used in matrix
    multiplies (attention projections, FFN, output head) and 12 L D T counts
    QK^T and AV. Encoder-decoder, source S and target T, per target token:
        [6 * (S * L * (6 D^2 + 2 D F) + T * (L * (6 D^2 + 2 D F) + D V))
         + 12 * L * D * (S^2 + T^2 + T S)] / T
    (encoder self-attention and the cross-attention K/V projections run over
    the S source tokens; decoder self-attention, cross-attention Q/O, FFN and
    the head over the T target tokens). Biases, norms and softmax are ignored.
    """
    c = model.config
    d, f, n, v = c.d_model, c.d_ff, c.n_layers, c.vocab_size
    if not model.is_encoder_decoder:
        t = seq_len or c.max_len
        return 6 * (n * (4 * d * d + 2 * d * f) + d * v) + 12 * n * d * t
    if src_len is None or tgt_len is None:
        if seq_len is None:
            raise ValueError("the encoder-decoder needs src_len= and tgt_len= (or a packed seq_len to halve)")
        src_len, tgt_len = seq_len // 2, seq_len - seq_len // 2
    s, t = src_len, tgt_len
    matmul = s * n * (4 * d * d + 2 * d * f + 2 * d * d) + t * (
        n * (4 * d * d + 2 * d * d + 2 * d * f) + d * v
    )
    return (6 * matmul + 12 * n * d * (s * s + t * t + t * s)) / t
