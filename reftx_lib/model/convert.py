"""Start an encoder-decoder from a decoder-only language model (Exp 5).

The layers share parameter shapes, so the decoder-only weights seed every encoder layer (only the mask
changes), every decoder layer's self-attention, FFN and norms, and optionally the cross-attention (which
has no pretrained counterpart: copied from self-attention, ``cross_init="self"``, or left fresh)."""

from __future__ import annotations

import torch
from torch import nn

from .transformer import ReferenceDecoderOnly, ReferenceTransformer

CROSS_INITS = ("self", "random")


@torch.no_grad()
def _copy(dst: nn.Module, src: nn.Module) -> None:
    """Copy every parameter of ``src`` into the same-named parameter of ``dst`` (shapes must match)."""
    dst_params, src_params = dict(dst.named_parameters()), dict(src.named_parameters())
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
    """A ``ReferenceTransformer`` of the same sizes, initialized from ``dec_model``'s weights so Exp 5 can
        measure transfer. ``init_encoder=False`` keeps the encoder fresh, ``init_decoder=False`` the decoder
    (cross-attention included), ``init_embedding=False`` the shared embedding (seed torch beforehand).
        The result is on ``dec_model``'s device in training mode; ``dec_model`` is not modified."""
    if not isinstance(dec_model, ReferenceDecoderOnly):
        raise TypeError(f"dec_model must be a ReferenceDecoderOnly, got {type(dec_model).__name__}")
    if cross_init not in CROSS_INITS:
        raise ValueError(f"unknown cross_init {cross_init!r}; allowed values: {list(CROSS_INITS)}")
    pretrained_len = dec_model.config.max_len
    config = dec_model.config.replace(prefix_lm=False, max_len=pretrained_len if max_len is None else max_len)
    if config.max_len < pretrained_len:
        raise ValueError(f"max_len={config.max_len} is below the pretrained model's {pretrained_len}")
    device = next(dec_model.parameters()).device
    model = ReferenceTransformer(config=config)  # fresh init first, so the RNG use matches a scratch model
    if init_embedding:
        model.embed.weight.copy_(dec_model.embed.weight)
        if not config.tie_embeddings:
            model.lm_head.weight.copy_(dec_model.lm_head.weight)
    for src, enc, dst in zip(dec_model.layers, model.encoder_layers, model.decoder_layers):
        if init_encoder:
            _copy(enc, src)  # the same self-attention, FFN and norms; only the mask differs
        if init_decoder:
            for part in ("self_attn", "self_norm", "ffn", "ffn_norm"):
                _copy(getattr(dst, part), getattr(src, part))
            if cross_init == "self":
                _copy(dst.cross_attn, src.self_attn)
                _copy(dst.cross_norm, src.self_norm)
    if init_encoder:
        _copy(model.encoder_norm, dec_model.norm)
    if init_decoder:
        _copy(model.decoder_norm, dec_model.norm)
    return model.to(device).train()
