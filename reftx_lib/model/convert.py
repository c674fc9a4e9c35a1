"""Start an encoder-decoder from a decoder-only language model.

The decoder-only model was pretrained on raw text with a causal mask. Its layers
are the same modules as the encoder-decoder's (``DecoderLayer`` without
cross-attention), so its weights can seed

- every **encoder** layer: same self-attention, FFN and norms; only the mask
  changes, because ``EncoderLayer`` attends bidirectionally (the "incorrect"
  part of the transfer: the weights never saw a bidirectional context);
- every **decoder** layer's causal self-attention, FFN and norms (a perfect fit);
- the decoder's **cross-attention**, which has no pretrained counterpart: it is
  copied from the same layer's self-attention (``cross_init="self"``, queries,
  keys and values all start as the pretrained projections) or left at a fresh
  random init (``cross_init="random"``).

The token embedding (and so the tied output head) is copied unless ``init_embedding=False``:
encoder and decoder share it, so it is one switch, and copying the embedding alone (no layer)
measures how much of the transfer is only "which tokens are alike". Positions are sinusoidal, so
``max_len`` can be raised for longer sources without any new parameter.
"""

from __future__ import annotations

import torch
from torch import nn

from .transformer import ReferenceDecoderOnly, ReferenceTransformer

CROSS_INITS = ("self", "random")


@torch.no_grad()
def _copy(dst: nn.Module, src: nn.Module) -> None:
    """Copy every parameter of ``src`` into the same-named parameter of ``dst`` (shapes must match)."""
    dst_params = dict(dst.named_parameters())
    src_params = dict(src.named_parameters())
    if dst_params.keys() != src_params.keys():
        raise ValueError(
            f"cannot copy {type(src).__name__} into {type(dst).__name__}: parameter names differ "
            f"({sorted(src_params)} vs {sorted(dst_params)})"
        )
    for name, p in src_params.items():
        dst_params[name].copy_(p)


@torch.no_grad()
def convert_decoder_only_to_encoder_decoder(
    dec_model: ReferenceDecoderOnly,
    cross_init: str = "self",
    init_encoder: bool = True,
    init_decoder: bool = True,
    init_embedding: bool = True,
    max_len: int | None = None,
) -> ReferenceTransformer:
    """A ``ReferenceTransformer`` of the same sizes, initialized from ``dec_model``'s weights.

    Parts that are not initialized from ``dec_model`` keep the fresh init of
    ``ReferenceTransformer`` (seed torch beforehand for a reproducible result):
    ``init_encoder=False`` leaves the encoder layers and encoder norm fresh,
    ``init_decoder=False`` leaves the decoder layers (cross-attention included)
    and decoder norm fresh, ``init_embedding=False`` leaves the shared token embedding (and tied
    head) fresh. ``cross_init`` ("self" or "random") only matters when
    the decoder is initialized. The new model lives on ``dec_model``'s device, in
    training mode; ``dec_model`` is not modified.
    """
    if not isinstance(dec_model, ReferenceDecoderOnly):
        raise TypeError(f"dec_model must be a ReferenceDecoderOnly, got {type(dec_model).__name__}")
    if cross_init not in CROSS_INITS:
        raise ValueError(f"unknown cross_init {cross_init!r}; allowed values: {list(CROSS_INITS)}")
    config = dec_model.config if max_len is None else dec_model.config.replace(max_len=max_len)
    if config.max_len < dec_model.config.max_len:
        raise ValueError(
            f"max_len={config.max_len} is below the pretrained model's {dec_model.config.max_len}"
        )
    device = next(dec_model.parameters()).device
    model = ReferenceTransformer(config=config)  # fresh init first, so the RNG use matches a scratch model
    if init_embedding:
        model.embed.weight.copy_(dec_model.embed.weight)
        if not config.tie_embeddings:
            model.lm_head.weight.copy_(dec_model.lm_head.weight)
    for i, src in enumerate(dec_model.layers):
        if init_encoder:
            enc = model.encoder_layers[i]
            _copy(enc.self_attn, src.self_attn)
            _copy(enc.attn_block, src.self_block)  # the pre-LN norm in front of self-attention
            _copy(enc.ffn, src.ffn)
            _copy(enc.ffn_block, src.ffn_block)
        if init_decoder:
            dst = model.decoder_layers[i]
            _copy(dst.self_attn, src.self_attn)
            _copy(dst.self_block, src.self_block)
            _copy(dst.ffn, src.ffn)
            _copy(dst.ffn_block, src.ffn_block)
            if cross_init == "self":
                _copy(dst.cross_attn, src.self_attn)
                _copy(dst.cross_block, src.self_block)
    if init_encoder:
        _copy(model.encoder_norm, dec_model.norm)
    if init_decoder:
        _copy(model.decoder_norm, dec_model.norm)
    return model.to(device).train()
