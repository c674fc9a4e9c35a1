"""The two architectures the course compares: ``ReferenceTransformer``, the encoder-decoder of Vaswani et
al. (2017), and ``ReferenceDecoderOnly``, its decoder stack without encoder and cross-attention (GPT),
which with ``prefix_lm=True`` reads its source both ways (a prefix LM). Both share ``BaseLanguageModel``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import IGNORE_INDEX
from . import layers, packing
from .config import INIT_STD, ModelConfig
from .generation import generate


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    """Mean cross-entropy of logits (B, T, V) against labels (B, T), padding and -100 not counted, and
    ``n_tokens``, how many counted: callers turn means into exact token-weighted sums (perplexity)."""
    # With pad 0, clamp turns -100 into pad and tells torch.compile that targets are >= 0: the compiled
    # loss then needs no negative-index wrap-around over all (B*T, V) logits (~8% faster, ``tools``).
    labels = labels.clamp(min=0) if pad_id == 0 else labels.masked_fill(labels < 0, pad_id)
    loss = F.cross_entropy(logits.flatten(0, -2).float(), labels.reshape(-1), ignore_index=pad_id)
    return {"loss": loss, "n_tokens": (labels != pad_id).sum()}


class BaseLanguageModel(nn.Module):
    """What both architectures share: the embedding, the positions, the output head and ``generate``."""

    is_encoder_decoder = False  # True: reads each packed ``source [SEP] target`` row in two parts

    def __init__(self, config: ModelConfig | None = None, **sizes) -> None:
        super().__init__()  # Model(config=ModelConfig(...)) or Model(vocab_size=..., d_model=..., ...)
        c = config if config is not None else ModelConfig(**sizes)
        self.config = c = c.replace(embed_norm=self.is_encoder_decoder) if c.embed_norm is None else c
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = (
            layers.SinusoidalPositionalEncoding(c.d_model, c.max_len, c.position_scale)
            if c.positions == "sinusoidal"
            else layers.LearnedPositionalEmbedding(c.d_model, c.max_len)
        )
        self.embed_norm = nn.LayerNorm(c.d_model) if c.embed_norm else nn.Identity()
        self.drop = nn.Dropout(c.dropout)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @classmethod
    def from_size(cls, name: str, vocab_size: int, **overrides) -> BaseLanguageModel:
        """A model of one of the seed's sizes (``tiny`` ... ``large``) or ours (``smoke``, ``mini``)."""
        return cls(config=ModelConfig.from_size(name, vocab_size, **overrides))

    @classmethod
    def from_config(cls, config: ModelConfig | dict) -> BaseLanguageModel:
        """Rebuild a model from a stored config (as saved in checkpoints)."""
        return cls(config=config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config))

    def _init_weights(self, *stacks: nn.ModuleList) -> None:
        """GPT-2's init: N(0, 0.02) weights, embeddings and learned positions, zero biases, and each write
        into a stack's residual stream at 0.02 / sqrt(writes), so growth does not depend on depth."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, layers.LearnedPositionalEmbedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for stack in stacks:
            writers = [m.out_proj for m in stack.modules() if isinstance(m, layers.MultiHeadAttention)]
            writers += [m.fc2 for m in stack.modules() if isinstance(m, layers.FeedForward)]
            for linear in writers:
                nn.init.normal_(linear.weight, mean=0.0, std=INIT_STD / math.sqrt(len(writers)))

    def _embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(B, T) ids -> (B, T, D): token plus position signal, normalized if ``embed_norm``, with dropout.
        The 2017 recipe (``scale_embedding=True, position_scale=1.0``) drowns the tokens (notebook 00)."""
        tokens = self.embed(ids)  # (B, T, D)
        if self.config.scale_embedding:
            tokens = tokens * math.sqrt(self.config.d_model)
        return self.drop(self.embed_norm(tokens + self.pos(ids.size(1), offset)))

    def _head(self, hidden: torch.Tensor, labels: torch.Tensor | None, head: bool) -> dict:
        """Logits (B, T, V) and, with labels (B, T), the loss; ``head=False`` returns the final hidden
        states (B, T, D) and the labels they predict instead, for a trainer that fuses the head with the
        loss and never builds the logits (``reftx_lib.train.loss``)."""
        if not head:
            return {"hidden": hidden, "labels": labels}
        out = {"logits": self.lm_head(hidden)}  # (B, T, V)
        if labels is not None:
            out.update(cross_entropy(out["logits"], labels, self.config.pad_token_id))
        return out

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 64, **kwargs) -> torch.Tensor:
        """New tokens (B, <= max_new_tokens) after a prompt, or for a source (encoder-decoder), padded
        after EOS; see ``reftx_lib.model.generation.generate``."""
        return generate(self, input_ids, max_new_tokens=max_new_tokens, **kwargs)


class ReferenceDecoderOnly(BaseLanguageModel):
    """GPT-style language model: causal decoder layers, no encoder, no cross-attention.

    With ``prefix_lm=True``, a prefix LM (Raffel et al. 2020): the same weights read each row ``[BOS]
    source [SEP] target [EOS]`` both ways up to its first SEP, causally after it, and predict only the
    target: the encoder-decoder's view of the source with one stack. ``model(ids, labels=ids)``.
    """

    def __init__(self, config: ModelConfig | None = None, **sizes) -> None:
        super().__init__(config, **sizes)
        c = self.config
        self.layers = nn.ModuleList(layers.DecoderLayer(c, cross_attention=False) for _ in range(c.n_layers))
        self.norm = nn.LayerNorm(c.d_model)
        self._init_weights(self.layers)

    def decode(
        self, ids: torch.Tensor, mask=None, caches: list | None = None, offset: int = 0, need_weights=False
    ) -> tuple[torch.Tensor, list]:
        """Final hidden states (B, T, D) of ids (B, T) at positions ``offset..``, and the attentions.
        ``mask`` (B, 1, T, S) replaces the causal one (a prefix LM's); ``caches``: one KV cache a layer."""
        x = self._embed(ids, offset)  # (B, T, D)
        attentions = []
        for i, layer in enumerate(self.layers):
            x, w, _ = layer(x, mask, cache=None if caches is None else caches[i], need_weights=need_weights)
            attentions.append(w)  # (B, H, T, S)
        return self.norm(x), attentions

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        prefix_len: torch.Tensor | None = None,
        head: bool = True,
        return_attention: bool = False,
    ) -> dict:
        """Logits (B, T, V); with labels (B, T) (``input_ids``, -100 where a token must not count), the
        next-token loss. ``prefix_len`` (B,) reads each row's first tokens both ways and predicts none of
        them; a ``prefix_lm`` model reads it off the rows (through each first SEP). Ids are trusted:
        check them where they enter (``reftx_lib.model.packing.check_batch``)."""
        if prefix_len is None and self.config.prefix_lm:
            prefix_len = (input_ids == self.config.sep_token_id).int().argmax(dim=1) + 1  # (B,)
        mask = (
            None if prefix_len is None else layers.prefix_lm_mask(prefix_len, input_ids.size(1))
        )  # (B, 1, T, T)
        hidden, attentions = self.decode(input_ids, mask, need_weights=return_attention)
        if labels is not None:
            if prefix_len is not None:  # a prediction inside the prefix could see its answer
                in_prefix = torch.arange(input_ids.size(1), device=input_ids.device) < prefix_len[:, None]
                labels = labels.masked_fill(in_prefix, IGNORE_INDEX)  # (B, T)
            # Shift the labels, not the logits: slicing logits[:, :-1] would copy all (B, T, V) of them.
            labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T): the last predicts nothing
        out = self._head(hidden, labels, head)
        if return_attention:
            out["attentions"] = attentions  # n_layers x (B, H, T, T)
        return out


class ReferenceTransformer(BaseLanguageModel):
    """Encoder-decoder Transformer (Vaswani et al. 2017), pre-LN, ``n_layers`` per stack, one token embedding
    (encoder, decoder, tied head); the decoder reads ``[BOS] + target[:-1]`` and predicts ``target``."""

    is_encoder_decoder = True

    def __init__(self, config: ModelConfig | None = None, **sizes) -> None:
        super().__init__(config, **sizes)
        c = self.config
        self.encoder_layers = nn.ModuleList(layers.EncoderLayer(c) for _ in range(c.n_layers))
        self.decoder_layers = nn.ModuleList(
            layers.DecoderLayer(c, cross_attention=True) for _ in range(c.n_layers)
        )
        self.encoder_norm = nn.LayerNorm(c.d_model)
        self.decoder_norm = nn.LayerNorm(c.d_model)
        self._init_weights(self.encoder_layers, self.decoder_layers)

    def split_packed(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Right-padded packed rows (B, L) -> source (B, S), target (B, T) and target labels, re-padded."""
        return packing.split_packed(input_ids, self.config.sep_token_id, self.config.pad_token_id, labels)

    def split_packed_row(self, row: list[int]) -> tuple[list[int], list[int]]:
        """One packed token list -> (source, target); a summarizer reads only the source."""
        return packing.split_packed_row(row, self.config.sep_token_id)

    def shift_right(self, tgt_ids: torch.Tensor) -> torch.Tensor:
        """[BOS] + target[:-1] (B, T): the decoder's input for teacher forcing."""
        return packing.shift_right(tgt_ids, self.config.bos_token_id)

    def encode(self, src_ids: torch.Tensor, need_weights: bool = False) -> tuple:
        """Source (B, S) -> memory (B, S, D), key mask (B, 1, 1, S), encoder attentions."""
        mask = layers.key_padding_mask(src_ids, self.config.pad_token_id)
        x = self._embed(src_ids)  # (B, S, D)
        attentions = []
        for layer in self.encoder_layers:
            x, w = layer(x, mask, need_weights)
            attentions.append(w)  # (B, H, S, S)
        return self.encoder_norm(x), mask, attentions

    def decode(
        self, dec_ids, memory, memory_mask, caches: list | None = None, offset: int = 0, need_weights=False
    ) -> tuple[torch.Tensor, list, list]:
        """Final decoder hidden states (B, T, D) of dec_ids (B, T), and the self- and cross-attentions."""
        x = self._embed(dec_ids, offset)  # (B, T, D)
        self_w, cross_w = [], []
        for i, layer in enumerate(self.decoder_layers):
            cache = None if caches is None else caches[i]
            x, sw, cw = layer(x, None, memory, memory_mask, cache=cache, need_weights=need_weights)
            self_w.append(sw)  # (B, H, T, T)
            cross_w.append(cw)  # (B, H, T, S)
        return self.decoder_norm(x), self_w, cross_w

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        src_ids: torch.Tensor | None = None,
        tgt_ids: torch.Tensor | None = None,
        head: bool = True,
        return_attention: bool = False,
    ) -> dict:
        """Logits (B, T, V) over the target; with labels, the loss on target tokens only. Packed rows
        (``source [SEP] target``, right-padded): ``forward(input_ids, labels=input_ids)``; or explicit
        ``forward(src_ids=src, tgt_ids=tgt, labels=tgt)``. Ids are trusted (``packing.check_batch``)."""
        if input_ids is not None:
            if src_ids is not None or tgt_ids is not None:
                raise ValueError("pass either packed input_ids or src_ids/tgt_ids, not both")
            src_ids, tgt_ids, labels = self.split_packed(input_ids, labels)
        elif src_ids is None or tgt_ids is None:
            raise ValueError("ReferenceTransformer needs packed input_ids, or both src_ids= and tgt_ids=")
        memory, memory_mask, enc_w = self.encode(src_ids, return_attention)
        hidden, self_w, cross_w = self.decode(
            self.shift_right(tgt_ids), memory, memory_mask, need_weights=return_attention
        )
        out = self._head(hidden, labels, head)
        if return_attention:
            out["encoder_attentions"] = enc_w  # n_layers x (B, H, S, S)
            out["decoder_attentions"] = self_w  # n_layers x (B, H, T, T)
            out["cross_attentions"] = cross_w  # n_layers x (B, H, T, S), rows are target tokens
        return out
