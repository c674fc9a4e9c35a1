"""The two architectures the course compares.

``ReferenceTransformer`` is the encoder-decoder of Vaswani et al. (2017);
``ReferenceDecoderOnly`` is the same decoder stack without the encoder and
without cross-attention (GPT-style). Both share ``BaseLanguageModel``: one
embedding, sinusoidal positions, one output projection, parameter and FLOP
accounting, and ``generate``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..constants import IGNORE_INDEX
from . import packing
from .config import INIT_STD, ModelConfig
from .generation import generate as _generate
from .layers import (
    DecoderLayer,
    EncoderLayer,
    FeedForward,
    LearnedPositionalEmbedding,
    MultiHeadAttention,
    SinusoidalPositionalEncoding,
    key_padding_mask,
    prefix_lm_mask,
)
from .loss import cross_entropy, fused_head_cross_entropy, fused_loss_applies


class BaseLanguageModel(nn.Module, PyTorchModelHubMixin, library_name="reftx"):
    """What both architectures share: embeddings, output head, accounting, generation.

    Subclasses implement ``forward`` and the incremental-decoding hooks
    ``_init_state`` / ``_next_logits`` used by ``generate``; ``_reorder_state``
    (beam search) is shared. ``save_pretrained(folder)`` / ``from_pretrained(folder or Hub
    id)`` come from ``huggingface_hub``'s ``PyTorchModelHubMixin``: ``config.json`` plus
    ``model.safetensors``, the layout users of the Hub expect for a trained model.
    """

    is_encoder_decoder = False  # True for models that read a packed ``source [SEP] target`` row in two parts

    def __init__(
        self,
        vocab_size: int | None = None,
        d_model: int = 128,
        n_layers: int = 2,
        n_heads: int = 4,
        d_ff: int | None = None,
        dropout: float = 0.1,
        max_len: int = 1024,
        pad_token_id: int = 0,
        sep_token_id: int = 3,
        *,
        config: ModelConfig | None = None,
        **options,
    ) -> None:
        super().__init__()
        if config is None:
            if vocab_size is None:
                raise ValueError("vocab_size is required (or pass config=ModelConfig(...))")
            config = ModelConfig(
                vocab_size=vocab_size,
                d_model=d_model,
                n_layers=n_layers,
                n_heads=n_heads,
                d_ff=d_ff,
                dropout=dropout,
                max_len=max_len,
                pad_token_id=pad_token_id,
                sep_token_id=sep_token_id,
                **options,
            )
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.pos = (
            SinusoidalPositionalEncoding(c.d_model, c.max_len, c.position_scale)
            if c.positions == "sinusoidal"
            else LearnedPositionalEmbedding(c.d_model, c.max_len)
        )
        self.drop = nn.Dropout(c.dropout)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @classmethod
    def from_preset(cls, name: str, vocab_size: int, **overrides) -> BaseLanguageModel:
        """A model of one of the seed's sizes (``tiny``, ``small``, ``medium``, ``large``) or ``smoke``."""
        return cls(config=ModelConfig.from_preset(name, vocab_size, **overrides))

    @classmethod
    def from_config(cls, config: ModelConfig | dict) -> BaseLanguageModel:
        """Rebuild a model from a stored config (as saved in checkpoints)."""
        return cls(config=config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config))

    def _stacks(self) -> list[nn.ModuleList]:
        """The layer stacks, each with a residual stream of its own."""
        raise NotImplementedError

    def _init_weights(self) -> None:
        """GPT-2's initialization, for both models: N(0, 0.02) weights and embeddings (learned
        positions too), zero biases, and each projection that writes into a residual stream at
        0.02 / sqrt(writes in its stack).

        The scaling keeps the stream's growth over the stack independent of depth (GPT-2,
        Radford et al. 2019, section 2.3): ``2 * n_layers`` writes in a decoder-only stack or an
        encoder, ``3 * n_layers`` in a decoder with cross-attention.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, LearnedPositionalEmbedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for stack in self._stacks():
            writers = [m.out_proj for m in stack.modules() if isinstance(m, MultiHeadAttention)]
            writers += [m.fc2 for m in stack.modules() if isinstance(m, FeedForward)]
            for linear in writers:
                nn.init.normal_(linear.weight, mean=0.0, std=INIT_STD / math.sqrt(len(writers)))

    # ----------------------------------------------------------------- inputs
    def _check_ids(self, ids: torch.Tensor, name: str, check_length: bool = True) -> None:
        """Bad ids give a message naming the field and the fix, not an index error deep in torch.

        ``check_length=False`` is for a packed encoder-decoder row, whose source and target are each
        held to ``max_len`` after the split, not their sum."""
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise ValueError(
                f"{name} must hold integer token ids (torch.long), got dtype {ids.dtype}; "
                "pass the tokenizer's ids, e.g. tok(text, return_tensors='pt').input_ids"
            )
        if ids.dim() != 2:
            raise ValueError(
                f"{name} must be a (batch, length) tensor of token ids, got shape {tuple(ids.shape)}"
            )
        if ids.numel() == 0:
            raise ValueError(
                f"{name} is empty, shape {tuple(ids.shape)}: pass at least one row of at least one token"
            )
        if check_length and ids.size(1) > self.config.max_len:
            raise ValueError(
                f"{name} has length {ids.size(1)} > max_len={self.config.max_len}; "
                "truncate or chunk the input, or build the model with a larger max_len"
            )
        if torch.compiler.is_compiling():
            # The value check needs the ids on the host, which would split a compiled graph in
            # two (and keep the logits alive as a graph output); the embedding lookup still fails.
            return
        out_of_range = (ids < 0) | (ids >= self.config.vocab_size)
        if bool(out_of_range.any()):  # one host sync per checked tensor
            raise ValueError(
                f"{name} holds token id {int(ids[out_of_range][0])} "
                f"outside [0, vocab_size={self.config.vocab_size}); "
                "use the tokenizer the model was built for"
            )

    def _check_labels(self, labels: torch.Tensor) -> None:
        """Labels a loss can use: token ids or -100 (not counted), and at least one counted token.

        Labels are checked as they will be scored (after the decoder-only shift, or the
        encoder-decoder's split): with no counted token the mean loss would be 0/0 = nan.
        """
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must hold integer token ids (torch.long), got dtype {labels.dtype}")
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= self.config.vocab_size))
        if bool(bad.any()):
            raise ValueError(
                f"labels hold {int(labels[bad][0])}, outside [0, vocab_size={self.config.vocab_size}) "
                f"and not {IGNORE_INDEX} (ignored); use the tokenizer the model was built for"
            )
        if not bool(((labels >= 0) & (labels != self.config.pad_token_id)).any()):
            raise ValueError(
                "every label is padding or -100, so no token would count and the loss would be nan; "
                "pass labels with at least one scored token (decoder-only rows need 2+ tokens)"
            )

    def training_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward arguments for training on right-padded rows ``ids`` (B, L), built on the host.

        Checking token ids (and, for the encoder-decoder, finding each row's SEP)
        needs values on the host. The trainer calls this on the CPU copy of every
        batch and then runs ``forward(**inputs, check_ids=False)`` on the
        accelerator, so a training step never waits for a device-to-host copy.
        """
        self._check_ids(ids, "input_ids")
        return {"input_ids": ids, "labels": ids}

    def input_signals(self, ids: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The token signal (B, T, D) and the position signal (T, D) whose sum starts the residual stream.

        Their sizes decide what the first layers see. Token rows start at N(0, 0.02) and the
        sinusoids at the same RMS (``ModelConfig.position_scale``), so neither drowns the other,
        nor what the first blocks add. The 2017 paper's recipe (``scale_embedding=True,
        position_scale=1.0``) on these N(0, 0.02) rows puts three times more position than token
        into the stream at d_model 128, and the model sits on the unigram plateau for hundreds of steps.
        With ``positions="learned"`` the position signal is a trained table that starts at the same size.
        """
        tokens = self.embed(ids)  # (B, T, D)
        if self.config.scale_embedding:
            tokens = tokens * math.sqrt(self.config.d_model)
        return tokens, self.pos(ids.size(1), offset)

    def _embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """(B, T) ids -> (B, T, D): token plus position signal, with dropout."""
        tokens, positions = self.input_signals(ids, offset)
        return self.drop(tokens + positions)

    def _head_and_loss(
        self, hidden: torch.Tensor, labels: torch.Tensor | None, return_logits: bool
    ) -> dict[str, torch.Tensor]:
        """Logits (B, T, V) from final hidden states (B, T, D) and, with labels (B, T), the loss.

        Without ``return_logits`` the logits are not needed, and eager CPU training
        uses ``reftx_lib.model.loss.fused_head_cross_entropy``, which never builds them.
        """
        if not return_logits and labels is None:
            raise ValueError("return_logits=False only makes sense with labels: pass labels= to get the loss")
        pad = self.config.pad_token_id
        if not return_logits and fused_loss_applies(hidden):
            return fused_head_cross_entropy(hidden, self.lm_head.weight, labels, pad)
        logits = self.lm_head(hidden)  # (B, T, V)
        out = {"logits": logits} if return_logits else {}
        if labels is not None:
            out.update(cross_entropy(logits, labels, pad))
        return out

    # ------------------------------------------------------------- accounting
    def num_parameters(self) -> dict[str, int]:
        """Parameter counts from closed-form formulas (tests check them against the modules).

        Components are disjoint and add up to ``total``: embeddings, positions (0 for
        sinusoids), lm_head (0 when tied), encoder_self_attention, decoder_self_attention,
        cross_attention, ffn, norms. ``encoder`` and ``decoder`` are stack totals;
        ``non_embedding`` leaves out the token and position embeddings and any untied
        output matrix (Kaplan et al. 2020's N).
        """
        c = self.config
        d, f, n = c.d_model, c.d_ff, c.n_layers
        attn = 4 * d * d + 4 * d  # q, k, v, out projections with biases
        ffn = 2 * d * f + f + d
        ln = 2 * d
        enc = self.is_encoder_decoder
        final_norms = (2 if enc else 1) if c.norm_first else 0
        counts = {
            "embeddings": c.vocab_size * d,
            "positions": c.max_len * d if c.positions == "learned" else 0,
            "lm_head": 0 if c.tie_embeddings else c.vocab_size * d,
            "encoder_self_attention": n * attn if enc else 0,
            "decoder_self_attention": n * attn,
            "cross_attention": n * attn if enc else 0,
            "ffn": (2 if enc else 1) * n * ffn,
            "norms": ((2 * n + 3 * n) if enc else 2 * n) * ln + final_norms * ln,
        }
        counts["encoder"] = n * (attn + ffn + 2 * ln) + (ln if c.norm_first else 0) if enc else 0
        counts["decoder"] = n * (attn * (2 if enc else 1) + ffn + (3 if enc else 2) * ln) + (
            ln if c.norm_first else 0
        )
        counts["total"] = sum(
            counts[k]
            for k in (
                "embeddings",
                "positions",
                "lm_head",
                "encoder_self_attention",
                "decoder_self_attention",
                "cross_attention",
                "ffn",
                "norms",
            )
        )
        counts["non_embedding"] = (
            counts["total"] - counts["embeddings"] - counts["positions"] - counts["lm_head"]
        )
        return counts

    def counted_targets(self, ids: torch.Tensor) -> int:
        """Tokens the training loss counts in right-padded rows ``ids`` (B, L): every next token.

        The first token of a row is never a target. Tokens per second of training are only
        comparable between the architectures when counted this way.
        """
        real = int((ids != self.config.pad_token_id).sum())
        return real - ids.size(0)

    def flops_per_token(
        self, seq_len: int | None = None, *, src_len: int | None = None, tgt_len: int | None = None
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
        c = self.config
        d, f, n, v = c.d_model, c.d_ff, c.n_layers, c.vocab_size
        if not self.is_encoder_decoder:
            t = seq_len or c.max_len
            return 6 * (n * (4 * d * d + 2 * d * f) + d * v) + 12 * n * d * t
        if src_len is None or tgt_len is None:
            if seq_len is None:
                raise ValueError(
                    "the encoder-decoder needs src_len= and tgt_len= (or a packed seq_len to halve)"
                )
            src_len, tgt_len = seq_len // 2, seq_len - seq_len // 2
        s, t = src_len, tgt_len
        matmul = s * n * (4 * d * d + 2 * d * f + 2 * d * d) + t * (
            n * (4 * d * d + 2 * d * d + 2 * d * f) + d * v
        )
        return (6 * matmul + 12 * n * d * (s * s + t * t + t * s)) / t

    def _reorder_state(self, state: dict, index: torch.Tensor) -> None:
        """Follow the surviving beams: pick rows ``index`` of every per-row tensor, KV caches included."""
        state.update({key: value[index] for key, value in state.items() if torch.is_tensor(value)})
        for cache in state["caches"] or []:
            for kv in cache.values():
                kv.update({key: value[index] for key, value in kv.items() if torch.is_tensor(value)})

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 64, **kwargs) -> torch.Tensor:
        """Decode up to ``max_new_tokens`` tokens; see ``reftx_lib.model.generation.generate`` for options.

        For the decoder-only model ``input_ids`` is the prompt; for the
        encoder-decoder it is the source. Returns only the new tokens (B, <= max_new_tokens),
        right-padded after each row's EOS.
        """
        return _generate(self, input_ids, max_new_tokens=max_new_tokens, **kwargs)


class ReferenceDecoderOnly(BaseLanguageModel):
    """GPT-style language model: causal decoder layers, no encoder, no cross-attention.

    >>> model = ReferenceDecoderOnly.from_preset("tiny", vocab_size=8192)
    >>> out = model(ids, labels=ids)   # out["logits"] (B, T, V), out["loss"] next-token CE
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        self.layers = nn.ModuleList(
            DecoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, cross_attention=False)
            for _ in range(c.n_layers)
        )
        self.norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self._init_weights()

    def _stacks(self) -> list[nn.ModuleList]:
        return [self.layers]

    def _decode(self, ids, caches=None, offset=0, need_weights=False, self_mask=None):
        """Final hidden states (B, T, D), before the output head, and the attention weights.

        ``self_mask`` (B, 1, T, S) replaces the causal mask (a prefix LM's); None keeps it causal."""
        x = self._embed(ids, offset)  # (B, T, D)
        attentions = []
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]
            x, w, _ = layer(x, need_weights=need_weights, cache=cache, self_mask=self_mask)
            attentions.append(w)
        return self.norm(x), attentions

    def _attention_and_labels(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None, check: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The self-attention mask (None: causal) and the labels the loss may see: a GPT reads every row
        causally and predicts every next token."""
        return None, labels

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_attention: bool = False,
        *,
        check_ids: bool = True,
        return_logits: bool = True,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Logits (B, T, V) for every position; with labels (B, T), the next-token loss.

        The shift happens here (logits at t predict labels at t+1), so callers pass
        ``labels=input_ids``, optionally with -100 where a token must not count
        (e.g. the first half of a document for second-half perplexity).
        ``check_ids=False`` skips the id range check (one host sync on a GPU) for
        inputs already checked by ``training_inputs``; ``return_logits=False``
        (training: only the loss is needed) lets a CPU step skip building the logits.
        """
        if check_ids:
            self._check_ids(input_ids, "input_ids")
        self_mask, labels = self._attention_and_labels(input_ids, labels, check_ids)
        hidden, attentions = self._decode(input_ids, need_weights=return_attention, self_mask=self_mask)
        # Shift the labels, not the logits: slicing logits[:, :-1] would copy all (B, T, V)
        # of them, and its backward would zero-fill and copy a gradient just as large.
        next_labels = None if labels is None else F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # (B, T)
        if check_ids and next_labels is not None:
            self._check_labels(next_labels)
        out: dict = self._head_and_loss(
            hidden, next_labels, return_logits
        )  # the last position predicts nothing
        if return_attention:
            out["attentions"] = attentions  # n_layers x (B, H, T, T)
        return out

    # ------------------------------------------------------ incremental decoding
    def _init_state(self, input_ids: torch.Tensor, use_cache: bool) -> tuple[dict, torch.Tensor]:
        """Decoding state and the first tokens to feed: the whole prompt."""
        self._check_ids(input_ids, "input_ids")
        if (input_ids == self.config.pad_token_id).any():
            raise ValueError(
                "decoder-only prompts must not contain padding: give equal-length prompts "
                "or generate one prompt at a time"
            )
        state = {"seq": input_ids[:, :0], "caches": [{} for _ in self.layers] if use_cache else None}
        return state, input_ids

    def _next_logits(self, state: dict, new: torch.Tensor) -> torch.Tensor:
        """Append ``new`` (B, n) to the sequence and return the logits (B, V) for what follows."""
        past = state["seq"].size(1)
        state["seq"] = torch.cat([state["seq"], new], dim=1)
        if state["seq"].size(1) > self.config.max_len:
            raise ValueError(
                f"generation would exceed max_len={self.config.max_len}: lower max_new_tokens "
                "or shorten the prompt"
            )
        if state["caches"] is None:  # the whole sequence again
            seq = state["seq"]
            hidden = self._decode(seq, self_mask=self._prompt_mask(state, seq.size(0), seq.size(1)))[0]
        else:  # the prompt gets its mask once; later tokens see every cached key (causal)
            mask = self._prompt_mask(state, new.size(0), new.size(1)) if past == 0 else None
            hidden = self._decode(new, state["caches"], offset=past, self_mask=mask)[0]
        return self.lm_head(hidden[:, -1])  # (B, V): only the last position needs the output head

    def _prompt_mask(self, state: dict, batch: int, t: int) -> torch.Tensor | None:
        """The self-attention mask (B, 1, T, T) of the first ``t`` generated positions; None: causal."""
        return None


class ReferencePrefixLM(ReferenceDecoderOnly):
    """A decoder-only model that reads its source like an encoder: a prefix LM (Raffel et al. 2020, T5's
    "prefix LM"; Dong et al. 2019, UniLM).

    It has exactly the decoder-only model's weights, and reads packed rows ``[BOS] source [SEP] target
    [EOS]``: every position attends to the whole prefix (up to and including the first SEP), in both
    directions, and causally to the target; only target tokens are predicted (a prediction inside the
    prefix could see its answer). It sits between the two architectures of Exp 1: the encoder-decoder's
    view of the source, the decoder-only model's single stack and parameter count.

    >>> model = ReferencePrefixLM.from_preset("tiny", vocab_size=8192)
    >>> out = model(rows, labels=rows)   # loss over the tokens after each row's SEP
    """

    def prefix_lengths(self, ids: torch.Tensor, check: bool = True) -> torch.Tensor:
        """(B,) the length of each row's prefix: up to and including its first SEP."""
        is_sep = ids == self.config.sep_token_id
        if check:
            missing = (~is_sep.any(dim=1)).nonzero().flatten().tolist()
            if missing:
                raise ValueError(
                    f"prefix-LM rows {missing[:10]} have no SEP token (id {self.config.sep_token_id}); "
                    "pack each row as [BOS] + source + [SEP] + target + [EOS] (layout 'prefix')"
                )
        return is_sep.int().argmax(dim=1) + 1

    def _attention_and_labels(self, input_ids, labels, check):
        prefix = self.prefix_lengths(input_ids, check)  # (B,)
        if labels is not None:
            in_prefix = torch.arange(input_ids.size(1), device=input_ids.device)[None, :] < prefix[:, None]
            labels = labels.masked_fill(in_prefix, IGNORE_INDEX)  # (B, T): predicted only after SEP
        return prefix_lm_mask(prefix, input_ids.size(1)), labels

    def training_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows (B, L) checked on the host, SEP included; ``forward`` masks the prefix's labels."""
        self._check_ids(ids, "input_ids")
        self.prefix_lengths(ids)
        return {"input_ids": ids, "labels": ids}

    def counted_targets(self, ids: torch.Tensor) -> int:
        """Tokens the loss counts in packed rows (B, L): the target after each SEP, as the encoder-decoder."""
        return packing.counted_targets(ids, self.config.sep_token_id, self.config.pad_token_id)

    def _init_state(self, input_ids: torch.Tensor, use_cache: bool) -> tuple[dict, torch.Tensor]:
        """The whole prompt is the prefix: read bidirectionally once, then every new token causally."""
        state, first = super()._init_state(input_ids, use_cache)
        state["prefix"] = input_ids.size(1)
        return state, first

    def _prompt_mask(self, state: dict, batch: int, t: int) -> torch.Tensor:
        prefix = torch.full((batch,), state["prefix"], device=self.lm_head.weight.device)  # (B,)
        return prefix_lm_mask(prefix, t)


class ReferenceTransformer(BaseLanguageModel):
    """Encoder-decoder Transformer (Vaswani et al. 2017), pre-LN by default.

    ``n_layers`` is the number of layers *per stack*: the encoder and the decoder
    each have ``n_layers`` layers. The token embedding is shared by encoder,
    decoder and (when tied) the output projection.

    Input is either the packed format ``source + [SEP] + target`` (right-padded),
    split at each row's first SEP, or explicit ``src_ids`` / ``tgt_ids``.
    The decoder reads ``[BOS] + target[:-1]`` and predicts ``target``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        c = self.config
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first) for _ in range(c.n_layers)
        )
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first, cross_attention=True)
            for _ in range(c.n_layers)
        )
        self.encoder_norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self.decoder_norm = nn.LayerNorm(c.d_model) if c.norm_first else nn.Identity()
        self._init_weights()

    def _stacks(self) -> list[nn.ModuleList]:
        return [self.encoder_layers, self.decoder_layers]

    is_encoder_decoder = True

    def counted_targets(self, ids: torch.Tensor) -> int:
        """Tokens the training loss counts in packed rows ``ids`` (B, L): the target after each SEP."""
        return packing.counted_targets(ids, self.config.sep_token_id, self.config.pad_token_id)

    def split_packed_row(self, row: list[int]) -> tuple[list[int], list[int]]:
        """One packed ``source [SEP] target`` token list -> (source, target); a summarizer reads only the
        source."""
        return packing.split_packed_row(row, self.config.sep_token_id)

    def split_packed(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Split packed rows (B, L) at the first SEP into source (B, S) and target (B, T), re-padded.

        Rows are assumed right-padded. ``labels`` (B, L), if given, is split the same way.
        """
        return packing.split_packed(input_ids, self.config.sep_token_id, self.config.pad_token_id, labels)

    def training_inputs(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Packed rows (B, L) split at SEP on the host: ``src_ids``, ``tgt_ids`` and ``labels``.

        The split needs each row's SEP position and the longest source and target,
        which are host values; see ``BaseLanguageModel.training_inputs``.
        """
        src, tgt, labels = self.split_packed(ids, ids)
        self._check_ids(src, "source (src_ids)")
        self._check_ids(tgt, "target (tgt_ids)")
        return {"src_ids": src, "tgt_ids": tgt, "labels": labels}

    def encode(self, src_ids: torch.Tensor, need_weights: bool = False):
        """Source (B, S) -> memory (B, S, D), key mask (B, 1, 1, S), encoder attentions."""
        mask = key_padding_mask(src_ids, self.config.pad_token_id)
        x = self._embed(src_ids)
        attentions = []
        for layer in self.encoder_layers:
            x, w = layer(x, mask, need_weights)
            attentions.append(w)
        return self.encoder_norm(x), mask, attentions

    def _decode(self, dec_ids, memory, memory_mask, caches=None, offset=0, need_weights=False):
        """Final decoder hidden states (B, T, D), before the output head, and the attention weights."""
        x = self._embed(dec_ids, offset)  # (B, T, D)
        self_w, cross_w = [], []
        for i, layer in enumerate(self.decoder_layers):
            x, sw, cw = layer(x, memory, memory_mask, need_weights, None if caches is None else caches[i])
            self_w.append(sw)
            cross_w.append(cw)
        return self.decoder_norm(x), self_w, cross_w

    def shift_right(self, tgt_ids: torch.Tensor) -> torch.Tensor:
        """[BOS] + target[:-1]: the decoder's input for teacher forcing."""
        return packing.shift_right(tgt_ids, self.config.bos_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        src_ids: torch.Tensor | None = None,
        tgt_ids: torch.Tensor | None = None,
        return_attention: bool = False,
        check_ids: bool = True,
        return_logits: bool = True,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Logits (B, T, V) over target positions; with labels, the loss on target tokens only.

        Packed: ``forward(input_ids, labels=input_ids)``. Explicit:
        ``forward(src_ids=src, tgt_ids=tgt, labels=tgt)`` with labels shaped like tgt_ids.
        ``check_ids=False`` skips the id range check, for inputs from ``training_inputs``;
        ``return_logits=False`` returns only the loss, computed without the logits on a CPU.
        """
        if input_ids is not None:
            if src_ids is not None or tgt_ids is not None:
                raise ValueError("pass either packed input_ids or src_ids/tgt_ids, not both")
            if check_ids:
                self._check_ids(input_ids, "input_ids", check_length=False)
            src_ids, tgt_ids, labels = self.split_packed(input_ids, labels)
        elif src_ids is None or tgt_ids is None:
            raise ValueError("ReferenceTransformer needs packed input_ids, or both src_ids= and tgt_ids=")
        if check_ids:
            self._check_ids(src_ids, "source (src_ids)")
            self._check_ids(tgt_ids, "target (tgt_ids)")
            if labels is not None:
                self._check_labels(labels)
        memory, memory_mask, enc_w = self.encode(src_ids, return_attention)
        hidden, self_w, cross_w = self._decode(
            self.shift_right(tgt_ids), memory, memory_mask, need_weights=return_attention
        )
        out: dict = self._head_and_loss(hidden, labels, return_logits)
        if return_attention:
            out["encoder_attentions"] = enc_w  # n_layers x (B, H, S, S)
            out["decoder_attentions"] = self_w  # n_layers x (B, H, T, T)
            out["cross_attentions"] = cross_w  # n_layers x (B, H, T, S), rows are target tokens
        return out

    # ------------------------------------------------------ incremental decoding
    def _init_state(self, input_ids: torch.Tensor, use_cache: bool) -> tuple[dict, torch.Tensor]:
        """Encode the source once; the decoder starts from BOS."""
        self._check_ids(input_ids, "source (input_ids)")
        memory, memory_mask, _ = self.encode(input_ids)
        bos = torch.full_like(input_ids[:, :1], self.config.bos_token_id)
        state = {
            "memory": memory,
            "memory_mask": memory_mask,
            "seq": bos[:, :0],
            "caches": [{} for _ in self.decoder_layers] if use_cache else None,
        }
        return state, bos

    def _next_logits(self, state: dict, new: torch.Tensor) -> torch.Tensor:
        past = state["seq"].size(1)
        state["seq"] = torch.cat([state["seq"], new], dim=1)
        if state["seq"].size(1) > self.config.max_len:
            raise ValueError(f"generation would exceed max_len={self.config.max_len}: lower max_new_tokens")
        if state["caches"] is None:
            hidden = self._decode(state["seq"], state["memory"], state["memory_mask"])[0]
        else:
            hidden = self._decode(new, state["memory"], state["memory_mask"], state["caches"], offset=past)[0]
        return self.lm_head(hidden[:, -1])  # (B, V)
