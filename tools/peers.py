"""The Hugging Face peers of our models, and building a matched pair for the speed benchmark.

Each of our models runs next to the closest ``transformers`` model of identical shape (a peer):

- ``ReferenceDecoderOnly`` vs ``GPT2LMHeadModel`` (pre-LN GPT block);
- ``ReferenceTransformer`` vs ``MBartForConditionalGeneration`` (pre-LN encoder-decoder),
  fed equal source and target lengths of ``seq_len / 2`` each.

Both sides get the same sizes, vocabulary (8192), dropout 0, SDPA attention,
exact GELU, the same random tokens, dtype (fp32 on CPU, bf16 autocast on CUDA)
and optimizer (AdamW, fused on CUDA). The peers have a few extra parameters
(learned position embeddings; MBart's embedding LayerNorms), reported as
``params`` / ``peer_params``. Each side trains through its own ordinary
training call: the peers' ``model(..., labels=...)``, and ours
``training_loss`` as ``reftx_lib.train.trainer`` calls it, which
on a CPU in eager mode fuses the output head with the loss (``reftx_lib.train.loss``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from reftx_lib.constants import BOS_ID, EOS_ID, PAD_ID
from reftx_lib.model.config import MODEL_SIZES
from reftx_lib.model.transformer import ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.train.loss import training_loss

VOCAB_SIZE = 8192
ARCHITECTURES = ("decoder-only", "encoder-decoder")


@dataclass
class Side:
    """One model of a pair, with what its training step and generation need."""

    name: str
    model: nn.Module
    loss: Callable[[nn.Module], torch.Tensor]  # runs the forward pass on the shared batch
    generate: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # source/prompt (B, P) -> new tokens (B, N)


def peer_gpt2(size: str, n_positions: int, vocab_size: int = VOCAB_SIZE, dropout: float = 0.0) -> nn.Module:
    """GPT-2 with our decoder-only model's sizes; ``dropout`` on embeddings and residuals, and none on the
    attention probabilities, as ours (``ModelConfig.attention_dropout``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    p = MODEL_SIZES[size]
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=p["d_model"],
        n_layer=p["n_layers"],
        n_head=p["n_heads"],
        n_inner=4 * p["d_model"],
        activation_function="gelu",
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=0.0,
        bos_token_id=BOS_ID,
        eos_token_id=None,
        pad_token_id=PAD_ID,  # no EOS: decode exactly N tokens
    )
    return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


def peer_mbart(size: str, n_positions: int, vocab_size: int = VOCAB_SIZE, dropout: float = 0.0) -> nn.Module:
    """MBart (pre-LN encoder-decoder) with our sizes; ``dropout`` wherever ours has it (not inside the
    FFN, nor on the attention probabilities)."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    p = MODEL_SIZES[size]
    config = MBartConfig(
        vocab_size=vocab_size,
        max_position_embeddings=n_positions,
        d_model=p["d_model"],
        encoder_layers=p["n_layers"],
        decoder_layers=p["n_layers"],
        encoder_attention_heads=p["n_heads"],
        decoder_attention_heads=p["n_heads"],
        encoder_ffn_dim=4 * p["d_model"],
        decoder_ffn_dim=4 * p["d_model"],
        activation_function="gelu",
        dropout=dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=False,  # as ours: token embeddings enter unscaled (ModelConfig.scale_embedding)
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=None,
        forced_eos_token_id=None,
        decoder_start_token_id=BOS_ID,
    )
    return MBartForConditionalGeneration._from_config(config, attn_implementation="sdpa")


def _ours(cls: type, size: str, n_positions: int) -> nn.Module:
    model = cls.from_size(size, vocab_size=VOCAB_SIZE, dropout=0.0, max_len=n_positions)
    with torch.no_grad():
        # EOS logit becomes exactly 0, below the max of the other 8191 random logits:
        # greedy decoding never stops early, like the peer configured without EOS.
        model.embed.weight[EOS_ID] = 0.0
    return model


def build_pair(
    arch: str, size: str, n_positions: int, batch: dict[str, torch.Tensor], new_tokens: int
) -> tuple[Side, Side]:
    """Ours and its peer for one architecture and size, bound to the shared training batch."""
    if arch == "decoder-only":
        ids = batch["ids"]
        ours = Side(
            "ReferenceDecoderOnly",
            _ours(ReferenceDecoderOnly, size, n_positions),
            lambda m: training_loss(m, {"input_ids": ids, "labels": ids})["loss"],
            lambda m, prompt: m.generate(prompt, max_new_tokens=new_tokens, use_cache=True),
        )
        peer = Side(
            "GPT2LMHeadModel",
            peer_gpt2(size, n_positions),
            lambda m: m(input_ids=ids, labels=ids).loss,
            lambda m, prompt: m.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,
            )[:, prompt.size(1) :],
        )
    elif arch == "encoder-decoder":
        src, tgt = batch["src"], batch["tgt"]
        src_mask = src != PAD_ID  # ours always masks source padding; give the peer the same information
        ours = Side(
            "ReferenceTransformer",
            _ours(ReferenceTransformer, size, n_positions),
            lambda m: training_loss(m, {"src_ids": src, "tgt_ids": tgt, "labels": tgt})["loss"],
            lambda m, source: m.generate(source, max_new_tokens=new_tokens, use_cache=True),
        )
        peer = Side(
            "MBartForConditionalGeneration",
            peer_mbart(size, n_positions),
            lambda m: m(input_ids=src, attention_mask=src_mask, labels=tgt).loss,
            lambda m, source: m.generate(
                source,
                attention_mask=source != PAD_ID,
                max_new_tokens=new_tokens,
                do_sample=False,
                num_beams=1,
                use_cache=True,
            )[:, 1:],  # drop the decoder start token
        )
    else:
        raise ValueError(f"unknown architecture {arch!r}; allowed values: {ARCHITECTURES}")
    return ours, peer


def random_batch(
    batch_size: int, seq_len: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random ordinary tokens (ids >= 4, so no padding or specials), identical for both sides.

    ``ids`` (B, T) for the decoder-only pair; ``src`` (B, T/2) and ``tgt`` (B, T - T/2)
    for the encoder-decoder pair, so both architectures read T tokens per row.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB_SIZE, (batch_size, seq_len), generator=g).to(device)
    half = seq_len // 2
    return {"ids": ids, "src": ids[:, :half].contiguous(), "tgt": ids[:, half:].contiguous()}


def gpt2_pairs(gpt2: nn.Module, ours: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter, bool]]:
    """(our parameter, GPT-2's, transposed?) for every weight of a ``ReferenceDecoderOnly`` and the
    ``GPT2LMHeadModel`` of the same size (GPT-2's Conv1D stores (in, out)).

    With ``positions="learned"`` every weight of either side has its pair, and a test copies GPT-2's
    weights into ours to compare what the two compute. With sinusoidal positions ours has no position
    table, so GPT-2's ``wpe`` is the one weight left out: copying the rest gives both sides the same
    initial draw except for the positions, which the learning benchmark's ``peer_init`` uses.
    """
    g = gpt2.transformer
    modules = {"embed": g.wte, "norm": g.ln_f}
    if ours.config.positions == "learned":
        modules["pos"] = g.wpe
    for i, block in enumerate(g.h):
        modules |= {
            f"layers.{i}.self_attn.in_proj": block.attn.c_attn,
            f"layers.{i}.self_attn.out_proj": block.attn.c_proj,
            f"layers.{i}.self_norm": block.ln_1,
            f"layers.{i}.ffn.fc1": block.mlp.c_fc,
            f"layers.{i}.ffn.fc2": block.mlp.c_proj,
            f"layers.{i}.ffn_norm": block.ln_2,
        }
    pairs = []
    for name, theirs in modules.items():
        mine = ours.get_submodule(name)
        for kind, value in theirs.named_parameters(recurse=False):
            conv1d = name.rsplit(".", 1)[-1] in ("in_proj", "out_proj", "fc1", "fc2") and value.dim() == 2
            pairs.append((getattr(mine, kind), value, conv1d))
    return pairs


@torch.no_grad()
def copy_gpt2_into_ours(gpt2: nn.Module, ours: nn.Module) -> None:
    """Give ours GPT-2's weights (see ``gpt2_pairs``): the same initial draw for both sides, positions aside
    when ours uses sinusoids."""
    for mine, theirs, transposed in gpt2_pairs(gpt2, ours):
        mine.copy_(theirs.t() if transposed else theirs)


@torch.no_grad()
def copy_mbart_into_ours(mbart: nn.Module, ours: nn.Module) -> None:
    """Give a ``ReferenceTransformer`` (``positions="learned"``) an ``MBartForConditionalGeneration``'s
    weights, so a test can compare what the two compute (issue 30's search for why ours copied slowly).

    Ours has one position table and one embedding norm for both stacks, MBart two of each: the encoder's
    are copied, so the two compute alike only while MBart's decoder ones are equal to them (as at init, or
    after a test ties them). Ours without ``embed_norm`` is MBart without its ``layernorm_embedding``.
    """
    m = mbart.model
    weights = {"embed.weight": m.shared.weight, "pos.weight": m.encoder.embed_positions.weight[2:]}
    if ours.config.embed_norm:
        weights |= {f"embed_norm.{k}": v for k, v in m.encoder.layernorm_embedding.named_parameters()}
    parts = {"self_attn": "self_attn", "self_norm": "self_attn_layer_norm", "ffn_norm": "final_layer_norm"}
    parts |= {"cross_attn": "encoder_attn", "cross_norm": "encoder_attn_layer_norm", "ffn.fc1": "fc1"}
    parts["ffn.fc2"] = "fc2"
    for stack, layers in (("encoder_layers", m.encoder.layers), ("decoder_layers", m.decoder.layers)):
        for i, layer in enumerate(layers):
            for mine, theirs in parts.items():
                if not hasattr(layer, theirs):
                    continue  # an encoder layer has no cross-attention
                module, name = getattr(layer, theirs), f"{stack}.{i}.{mine}"
                if mine.endswith("attn"):  # MBart's q, k, v projections are our stacked in_proj
                    q, k, v = module.q_proj, module.k_proj, module.v_proj
                    weights[f"{name}.in_proj.weight"] = torch.cat([q.weight, k.weight, v.weight])
                    weights[f"{name}.in_proj.bias"] = torch.cat([q.bias, k.bias, v.bias])
                    module, name = module.out_proj, f"{name}.out_proj"
                weights |= {f"{name}.{k}": v for k, v in module.named_parameters()}
    weights |= {f"encoder_norm.{k}": v for k, v in m.encoder.layer_norm.named_parameters()}
    weights |= {f"decoder_norm.{k}": v for k, v in m.decoder.layer_norm.named_parameters()}
    weights["pos.weight"] = weights["pos.weight"][: ours.config.max_len]
    ours.load_state_dict({**weights, "lm_head.weight": m.shared.weight}, strict=True)
