"""Look inside the models: extract, measure, plot and explore attention weights.

Convention everywhere in this module: **rows are queries, columns are keys**. A
matrix ``A`` of one head has ``A[i, j]`` = how much query position ``i`` reads key
position ``j``, and each row sums to 1. In cross-attention the rows are target
positions (decoder inputs) and the columns are source tokens.

Three kinds of attention exist: ``encoder`` (source reads source), ``decoder``
(causal; the decoder reads its own inputs) and ``cross`` (decoder reads source).
The decoder-only model has only ``decoder``.

Pieces, from raw to interactive:

* ``extract_attention`` runs one example and returns an ``AttentionRecord`` with the
  padding cut away and readable token labels;
* ``attention_stats`` / ``uniform_baseline`` / ``speaker_mass`` summarise records per
  layer and head, and ``stats_over_dataset`` gives a tidy DataFrame over many examples;
* ``plot_attention``, ``plot_attention_grid`` and ``plot_stat_distributions`` draw static
  figures (they survive where widgets render blank);
* ``to_bertviz`` exports to bertviz's ``head_view`` layout;
* ``AttentionExplorer`` is an ipywidgets browser over corpora, examples, layers and heads.
"""
from __future__ import annotations

import contextlib
import html
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Image, display
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ..data.batching import pad_batch
from ..model.transformer import BaseLanguageModel, ReferenceTransformer

KINDS = ("encoder", "decoder", "cross")
STATS = ("entropy", "distance", "diagonal", "previous", "first", "monotonicity", "speaker_mass")
# Which token sequence labels the rows / columns of each kind.
_AXES = {"encoder": ("source", "source"), "decoder": ("decoder", "decoder"), "cross": ("decoder", "source")}
_OUTPUT_KEYS = {"encoder": "encoder_attentions", "decoder": "decoder_attentions", "cross": "cross_attentions"}
_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}  # byte-level BPE alphabet -> raw byte
_SPEAKER = re.compile(rb"(?m)^[ \t]*([^\r\n:]{1,40}):(?=[ \t\r\n]|$)")  # "Name:" at a line start


# ============================================================== extraction
@dataclass
class AttentionRecord:
    """The attention of one example, padding removed, as numpy arrays.

    ``attentions[kind]`` has shape (layers, heads, T_query, T_key); rows are queries,
    columns are keys, and every row sums to 1:

    * ``encoder``: rows and columns are the source tokens;
    * ``decoder``: rows and columns are the decoder *inputs*. For the encoder-decoder
      these are ``[BOS] + target[:-1]`` (row i is the position that predicts
      ``target[i]``); for the decoder-only model they are the ids themselves. Causal:
      row i only sees columns 0..i;
    * ``cross``: rows are the decoder inputs (target positions), columns the source tokens.

    Token ids are kept next to their labels so statistics such as ``speaker_mass`` can
    be computed later without the model.
    """

    attentions: dict[str, np.ndarray]
    decoder_ids: list[int]
    decoder_tokens: list[str]
    source_ids: list[int] | None = None
    source_tokens: list[str] | None = None
    target_ids: list[int] | None = None  # what the decoder predicts (encoder-decoder only)

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if k in self.attentions]

    def _check_kind(self, kind: str) -> None:
        if kind not in self.attentions:
            raise ValueError(f"this record has no {kind!r} attention; allowed values: {self.kinds}")

    def attention(self, kind: str) -> np.ndarray:
        """All layers and heads of one kind, (layers, heads, T_query, T_key)."""
        self._check_kind(kind)
        return self.attentions[kind]

    def query_labels(self, kind: str) -> list[str]:
        """Labels of the rows of ``attentions[kind]``."""
        self._check_kind(kind)
        return self.source_tokens if _AXES[kind][0] == "source" else self.decoder_tokens

    def key_labels(self, kind: str) -> list[str]:
        """Labels of the columns of ``attentions[kind]``."""
        self._check_kind(kind)
        return self.source_tokens if _AXES[kind][1] == "source" else self.decoder_tokens

    def matrix(self, kind: str, layer: int, head: int | None = None) -> np.ndarray:
        """One (T_query, T_key) matrix; ``head=None`` averages the heads (rows still sum to 1)."""
        att = self.attention(kind)  # (L, H, Tq, Tk)
        if not 0 <= layer < att.shape[0]:
            raise ValueError(f"layer {layer} out of range: the model has {att.shape[0]} layer(s)")
        if head is None:
            return att[layer].mean(axis=0)
        if not 0 <= head < att.shape[1]:
            raise ValueError(f"head {head} out of range: the model has {att.shape[1]} head(s)")
        return att[layer, head]


def token_labels(ids: Sequence[int], tokenizer) -> list[str]:
    """Readable label of each token: decoded alone, spaces as ``▁``, newlines as ``\\n``.

    Decoding token by token (not the raw BPE strings with ``Ġ``/``Ċ``) shows students
    the text a token stands for; a token holding half of a multi-byte character shows ``�``.
    """
    labels = []
    for i in ids:
        text = tokenizer.decode([int(i)])
        labels.append(text.replace(" ", "▁").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return labels


def _as_ids(x) -> list[int]:
    """A 1-D sequence of ids (list, array, tensor or (1, L) tensor), trailing padding left in."""
    if isinstance(x, Mapping):
        x = x["input_ids"]
    return np.asarray(x, dtype=np.int64).reshape(-1).tolist()


def _split_example(model: BaseLanguageModel, example) -> tuple[list[int] | None, list[int]]:
    """One example -> (source ids or None, target ids / decoder-only ids), padding removed.

    Accepts a packed row ``source + [SEP] + target`` (list, tensor, or dataset row with
    ``input_ids``), or a ``(source, target)`` pair for the encoder-decoder.
    """
    pad = model.config.pad_token_id
    if isinstance(example, tuple) and len(example) == 2 and not np.isscalar(example[0]):
        if not isinstance(model, ReferenceTransformer):
            raise ValueError("a (source, target) pair needs an encoder-decoder; give the decoder-only model one id list")
        src, tgt = (_strip_pad(_as_ids(part), pad) for part in example)
    else:
        ids = _strip_pad(_as_ids(example), pad)
        if not isinstance(model, ReferenceTransformer):
            return None, ids
        sep = model.config.sep_token_id
        if sep not in ids:
            raise ValueError(f"packed example has no SEP token (id {sep}); pack it as source + [SEP] + target "
                             "or pass a (source, target) pair")
        cut = ids.index(sep)
        src, tgt = ids[:cut], ids[cut + 1 :]
    if not src or not tgt:
        raise ValueError(f"need a non-empty source and target, got {len(src)} source and {len(tgt)} target tokens")
    return src, tgt


def _strip_pad(ids: list[int], pad: int) -> list[int]:
    end = len(ids)
    while end and ids[end - 1] == pad:
        end -= 1
    if not end:
        raise ValueError("example is empty (only padding)")
    return ids[:end]


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Evaluate without dropout, then give the model back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


@dataclass
class _Batch:
    """A batched forward pass: zero-padded attention per kind plus each row's true lengths."""

    attentions: dict[str, torch.Tensor]  # kind -> (B, L, H, Tq, Tk)
    lengths: dict[str, tuple[torch.Tensor, torch.Tensor]]  # kind -> (query lengths (B,), key lengths (B,))
    source_ids: list[list[int]] | None
    target_ids: list[list[int]] | None
    decoder_ids: list[list[int]]


def _forward(model: BaseLanguageModel, examples: Sequence) -> _Batch:
    """Run ``examples`` as one padded batch with ``return_attention=True``."""
    pad = model.config.pad_token_id
    pairs = [_split_example(model, ex) for ex in examples]
    with _eval_mode(model):
        if isinstance(model, ReferenceTransformer):
            src, tgt = [p[0] for p in pairs], [p[1] for p in pairs]
            out = model(src_ids=pad_batch(src, pad), tgt_ids=pad_batch(tgt, pad), return_attention=True)
            dec = [[model.config.bos_token_id] + t[:-1] for t in tgt]
            s_len = torch.tensor([len(s) for s in src])
            t_len = torch.tensor([len(t) for t in tgt])
            lengths = {"encoder": (s_len, s_len), "decoder": (t_len, t_len), "cross": (t_len, s_len)}
        else:
            src, tgt, dec = None, None, [p[1] for p in pairs]
            out = model(pad_batch(dec, pad), return_attention=True)
            t_len = torch.tensor([len(d) for d in dec])
            out = {"decoder_attentions": out["attentions"]}
            lengths = {"decoder": (t_len, t_len)}
    attentions = {k: torch.stack(out[_OUTPUT_KEYS[k]], dim=1).float() for k in lengths}  # (B, L, H, Tq, Tk)
    return _Batch(attentions, lengths, src, tgt, dec)


def _records(batch: _Batch, tokenizer) -> list[AttentionRecord]:
    """Cut each row of a batch back to its own lengths."""
    records = []
    for b, dec in enumerate(batch.decoder_ids):
        atts = {}
        for kind, att in batch.attentions.items():
            q, k = (int(n[b]) for n in batch.lengths[kind])
            atts[kind] = att[b, :, :, :q, :k].numpy().copy()  # (L, H, Tq, Tk)
        src = batch.source_ids[b] if batch.source_ids is not None else None
        records.append(AttentionRecord(
            attentions=atts, decoder_ids=dec, decoder_tokens=token_labels(dec, tokenizer),
            source_ids=src, source_tokens=None if src is None else token_labels(src, tokenizer),
            target_ids=batch.target_ids[b] if batch.target_ids is not None else None,
        ))
    return records


def extract_attention(model: BaseLanguageModel, example, tokenizer) -> AttentionRecord:
    """Attention of every layer and head for ONE example, padding removed.

    ``example`` is a packed row ``source + [SEP] + target`` (list, 1-D or (1, L) tensor,
    or a dataset row with ``input_ids``), a ``(source_ids, target_ids)`` pair, or for the
    decoder-only model a plain id sequence. Trailing padding is ignored. See
    ``AttentionRecord`` for what the rows and columns of each kind are.
    """
    return _records(_forward(model, [example]), tokenizer)[0]


# ============================================================== statistics
def _padded_stats(
    att: torch.Tensor, q_len: torch.Tensor, k_len: torch.Tensor, kind: str,
    key_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example statistics (B, L, H) of zero-padded ``kind`` attention ``att`` (B, L, H, T, S).

    Every statistic is a mean over the query rows that have a choice: rows beyond
    ``q_len`` are padding, and a row with a single visible key (the first row of causal
    attention, or a one-token source) is forced to weight 1 and is left out.

    * ``entropy``: row entropy / log(number of visible keys): 1 = uniform, 0 = one key.
      Row i of causal attention sees i + 1 keys, so it is normalised by log(i + 1).
    * ``distance``: expected |j - i * S / T| in key positions, i.e. the distance from the
      row's *aligned* key; for self-attention (S = T) that is the plain |j - i|.
    * ``diagonal`` / ``previous`` / ``first``: mass on the aligned key round(i * S / T)
      (= i for self-attention), on the key before it (rows whose aligned key is 0 are
      left out), and on key 0.
    * ``monotonicity`` (cross-attention only): Spearman correlation, over the rows of
      one example, between the target position and the position of its most attended
      source token. 1 = the argmax walks forward through the source; NaN when the
      argmax never moves (the correlation is undefined).
    * ``speaker_mass`` (only with ``key_mask`` (B, S) bool): mass on the masked keys.
    """
    b, n_layers, n_heads, t, s = att.shape
    causal = kind == "decoder"
    i = torch.arange(t)[None, :, None]  # (1, T, 1)
    j = torch.arange(s)[None, None, :]  # (1, 1, S)
    visible = j < k_len[:, None, None]  # (B, 1, S)
    if causal:
        visible = visible & (j <= i)  # (B, T, S)
    visible = visible.expand(b, t, s)
    n_keys = visible.sum(-1)  # (B, T)
    rows = (i[..., 0] < q_len[:, None]) & (n_keys > 1)  # (B, T) rows that have a choice
    p = att * visible[:, None, None]  # (B, L, H, T, S)

    def row_mean(x: torch.Tensor, valid: torch.Tensor = rows) -> torch.Tensor:
        """Mean of x (B, L, H, T) over the valid rows (B, T); NaN where no row is valid."""
        count = valid.sum(-1)[:, None, None]  # (B, 1, 1)
        total = (x * valid[:, None, None]).sum(-1)
        return torch.where(count > 0, total / count.clamp(min=1), torch.nan)

    log_n = torch.log(n_keys.clamp(min=2).float())[:, None, None]  # (B, 1, 1, T)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum(-1) / log_n  # (B, L, H, T)
    aligned = i[..., 0] * (k_len / q_len.clamp(min=1))[:, None]  # (B, T) fractional key position
    distance = (p * (j - aligned[..., None]).abs()[:, None, None]).sum(-1)
    aligned_idx = torch.minimum(aligned.round().long(), (k_len - 1)[:, None])  # (B, T)
    idx = aligned_idx[:, None, None, :, None].expand(b, n_layers, n_heads, t, 1)
    diagonal = p.gather(-1, idx)[..., 0]
    previous = p.gather(-1, (idx - 1).clamp(min=0))[..., 0]
    stats = {
        "entropy": row_mean(entropy),
        "distance": row_mean(distance),
        "diagonal": row_mean(diagonal),
        "previous": row_mean(previous, rows & (aligned_idx > 0)),
        "first": row_mean(p[..., 0]),
    }
    if kind == "cross":
        stats["monotonicity"] = _spearman_with_position(p.argmax(-1), rows)
    if key_mask is not None:
        stats["speaker_mass"] = row_mean((p * key_mask[:, None, None, None, :s]).sum(-1))
    return stats


def _spearman_with_position(argmax: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Spearman correlation (B, L, H) between row index and ``argmax`` (B, L, H, T) over ``rows`` (B, T).

    Ranks of tied argmax values are averaged, as in ``scipy.stats.spearmanr``; row
    indices are already distinct ranks, so only the argmax side needs ranking.
    """
    valid = rows[:, None, None, :]  # (B, 1, 1, T)
    pair = valid[..., None] & valid[..., None, :]  # (B, 1, 1, T, T) both rows valid
    less = ((argmax[..., None, :] < argmax[..., :, None]) & pair).sum(-1)  # (B, L, H, T)
    equal = ((argmax[..., None, :] == argmax[..., :, None]) & pair).sum(-1)
    y = (less + (equal + 1) / 2).float()
    x = torch.arange(argmax.size(-1), dtype=torch.float).expand_as(y)
    n = valid.sum(-1).clamp(min=1)
    dx = (x - (x * valid).sum(-1, keepdim=True) / n[..., None]) * valid
    dy = (y - (y * valid).sum(-1, keepdim=True) / n[..., None]) * valid
    denom = torch.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
    return torch.where(denom > 1e-9, (dx * dy).sum(-1) / denom.clamp(min=1e-9), torch.nan)


def _stack_records(
    records: Sequence[AttentionRecord], kind: str, key_masks: Sequence[np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Zero-pad the ``kind`` attention of several records into one (B, L, H, T, S) tensor."""
    for r in records:
        r._check_kind(kind)
    shapes = [r.attentions[kind].shape for r in records]
    if len({s[:2] for s in shapes}) > 1:
        raise ValueError(f"records come from models of different sizes (layers, heads): {sorted({s[:2] for s in shapes})}")
    n_layers, n_heads = shapes[0][:2]
    t, s = max(sh[2] for sh in shapes), max(sh[3] for sh in shapes)
    att = torch.zeros(len(records), n_layers, n_heads, t, s)
    for b, r in enumerate(records):
        a = r.attentions[kind]
        att[b, :, :, : a.shape[2], : a.shape[3]] = torch.from_numpy(a)
    q_len = torch.tensor([sh[2] for sh in shapes])
    k_len = torch.tensor([sh[3] for sh in shapes])
    mask = None
    if key_masks is not None:
        mask = torch.zeros(len(records), s, dtype=torch.bool)
        for b, m in enumerate(key_masks):
            if len(m) != shapes[b][3]:
                raise ValueError(f"key mask {b} has {len(m)} entries but the {kind} attention has {shapes[b][3]} keys")
            mask[b, : len(m)] = torch.as_tensor(np.asarray(m, dtype=bool))
    return att, q_len, k_len, mask


def _uniform_like(att: torch.Tensor, k_len: torch.Tensor, causal: bool) -> torch.Tensor:
    """Uniform attention over exactly the keys each row of ``att`` (B, L, H, T, S) can see."""
    _, _, _, t, s = att.shape
    visible = torch.arange(s)[None, None, :] < k_len[:, None, None]  # (B, 1, S)
    if causal:
        visible = visible & (torch.arange(s)[None, :] <= torch.arange(t)[:, None])  # (B, T, S)
    visible = visible.expand(-1, t, s).float()
    return (visible / visible.sum(-1, keepdim=True).clamp(min=1))[:, None, None].expand_as(att)


def _uniform_stats(att: torch.Tensor, q_len: torch.Tensor, k_len: torch.Tensor, kind: str,
                   key_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``_padded_stats`` of uniform attention with the same shapes and lengths as ``att``."""
    stats = _padded_stats(_uniform_like(att, k_len, kind == "decoder"), q_len, k_len, kind, key_mask)
    if "monotonicity" in stats:  # uniform rows have no argmax; a random one correlates 0 in expectation
        stats["monotonicity"] = torch.zeros_like(stats["monotonicity"])
    return stats


def _summarise(stats: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Average per-example stats (B, L, H) over examples, ignoring undefined (NaN) ones."""
    return {name: torch.nanmean(v, dim=0).numpy() for name, v in stats.items()}  # (L, H) each


def _as_records(record_or_batch: AttentionRecord | Sequence[AttentionRecord]) -> list[AttentionRecord]:
    return [record_or_batch] if isinstance(record_or_batch, AttentionRecord) else list(record_or_batch)


def attention_stats(record_or_batch: AttentionRecord | Sequence[AttentionRecord], kind: str) -> dict[str, np.ndarray]:
    """Statistics of ``kind`` attention per layer and head, averaged over the records.

    Returns ``{stat: array (layers, heads)}`` for entropy, distance, diagonal, previous,
    first, and for ``cross`` monotonicity; definitions in ``_padded_stats``.
    Compare against ``uniform_baseline`` to see what "no structure" looks like.
    """
    att, q_len, k_len, _ = _stack_records(_as_records(record_or_batch), kind)
    return _summarise(_padded_stats(att, q_len, k_len, kind))


def uniform_baseline(record_or_batch: AttentionRecord | Sequence[AttentionRecord], kind: str) -> dict[str, np.ndarray]:
    """``attention_stats`` for uniform attention over the same visible keys of the same records.

    Distance and first-token mass depend on sequence length, so a model's number only
    means something next to this baseline. Uniform attention has no preferred key, so
    its monotonicity is reported as 0 (the expectation for a random argmax).
    """
    att, q_len, k_len, _ = _stack_records(_as_records(record_or_batch), kind)
    return _summarise(_uniform_stats(att, q_len, k_len, kind))


def _token_bytes(ids: Sequence[int], tokenizer) -> list[bytes]:
    """The raw UTF-8 bytes each byte-level BPE token stands for (exact, unlike decoding one token)."""
    out = []
    for tok in tokenizer.convert_ids_to_tokens([int(i) for i in ids]):
        if tok in tokenizer.all_special_tokens or any(c not in _BYTE_OF_CHAR for c in tok):
            out.append(tok.encode("utf-8"))  # special or non-byte-level token: its literal text
        else:
            out.append(bytes(_BYTE_OF_CHAR[c] for c in tok))
    return out


def speaker_token_mask(source: str | Sequence[int], tokenizer) -> np.ndarray:
    """Bool mask over the source tokens marking speaker names (SAMSum's ``Name:`` line prefixes).

    A speaker name is the text before the first ``:`` of a dialogue line (up to 40
    characters, followed by a space or the line end); the colon itself is not part of
    the name. A token is marked when its span overlaps a name. Spans are byte offsets
    computed from the tokens themselves, so the mask is exact for ids that were
    truncated or came from a dataset; text is tokenized without special tokens first.
    """
    ids = tokenizer(source, add_special_tokens=False)["input_ids"] if isinstance(source, str) else _as_ids(source)
    pieces = _token_bytes(ids, tokenizer)
    ends = np.cumsum([len(p) for p in pieces])  # (S,) byte offset where each token ends
    starts = ends - np.array([len(p) for p in pieces])
    mask = np.zeros(len(ids), dtype=bool)
    for match in _SPEAKER.finditer(b"".join(pieces)):
        name_start, name_end = match.span(1)
        mask |= (starts < name_end) & (ends > name_start)
    return mask


def speaker_mass(record: AttentionRecord, speaker_token_mask: np.ndarray) -> np.ndarray:
    """Share of cross-attention mass on speaker-name tokens, (layers, heads), mean over target rows.

    Compare with ``speaker_token_mask.mean()``, the share uniform attention would give.
    """
    att, q_len, k_len, mask = _stack_records([record], "cross", [speaker_token_mask])
    return _padded_stats(att, q_len, k_len, "cross", key_mask=mask)["speaker_mass"][0].numpy()


def stats_over_dataset(
    model: BaseLanguageModel,
    rows: Sequence,
    tokenizer,
    n: int = 100,
    batch_size: int = 16,
    seed: int | None = None,
    corpus: str | None = None,
    speakers: bool = False,
) -> pd.DataFrame:
    """Tidy statistics, one row per (example, kind, layer, head), over ``n`` examples of ``rows``.

    ``rows`` is anything ``extract_attention`` accepts per item (e.g. a tokenized
    ``Dataset`` with ``input_ids``). The first ``n`` rows are used, or with ``seed`` a
    seeded random sample: never a hand-picked set. Rows are batched by length to save
    padding; ``example`` is the row's index in ``rows``. Each statistic has a
    ``uniform_<stat>`` column (the same statistic for uniform attention over the same
    keys). ``speakers=True`` adds ``speaker_mass`` for cross-attention (SAMSum).
    """
    total = len(rows)
    n = min(n, total)
    order = np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
    examples = {int(i): rows[int(i)] for i in order}
    splits = {i: _split_example(model, ex) for i, ex in examples.items()}
    by_length = sorted(examples, key=lambda i: (sum(len(part or []) for part in splits[i]), i))
    frames = []
    for start in range(0, len(by_length), batch_size):
        chunk = by_length[start : start + batch_size]
        batch = _forward(model, [examples[i] for i in chunk])
        for kind, att in batch.attentions.items():
            q_len, k_len = batch.lengths[kind]
            mask = None
            if speakers and kind == "cross":
                masks = [speaker_token_mask(src, tokenizer) for src in batch.source_ids]
                mask = torch.from_numpy(np.stack([np.pad(m, (0, att.shape[-1] - len(m))) for m in masks]))
            stats = _padded_stats(att, q_len, k_len, kind, mask)
            uniform = _uniform_stats(att, q_len, k_len, kind, mask)
            frames.append(_frame(chunk, kind, stats, uniform, q_len, k_len))
    df = pd.concat(frames, ignore_index=True).sort_values(["example", "kind", "layer", "head"], ignore_index=True)
    present = [s for s in STATS if s in df.columns]
    df = df[[c for c in df.columns if c not in present and not c.startswith("uniform_")]
            + present + [f"uniform_{s}" for s in present]]
    if corpus is not None:
        df.insert(0, "corpus", corpus)
    return df


def _frame(examples: list[int], kind: str, stats: dict[str, torch.Tensor], uniform: dict[str, torch.Tensor],
           q_len: torch.Tensor, k_len: torch.Tensor) -> pd.DataFrame:
    """Flatten per-example stats (B, L, H) into long-format rows."""
    b, n_layers, n_heads = stats["entropy"].shape
    ex, layer, head = np.meshgrid(np.arange(b), np.arange(n_layers), np.arange(n_heads), indexing="ij")
    ex = ex.reshape(-1)
    data = {
        "example": np.asarray(examples)[ex], "kind": kind, "layer": layer.reshape(-1), "head": head.reshape(-1),
        "query_len": q_len.numpy()[ex], "key_len": k_len.numpy()[ex],
    }
    data |= {name: v.reshape(-1).numpy() for name, v in stats.items()}
    data |= {f"uniform_{name}": v.reshape(-1).numpy() for name, v in uniform.items()}
    return pd.DataFrame(data)


# ============================================================== plotting
def _axis_names(kind: str) -> tuple[str, str]:
    """What the rows and columns of ``kind`` are, for titles and axis labels."""
    return {
        "encoder": ("queries (source tokens)", "keys (source tokens)"),
        "decoder": ("queries (decoder inputs)", "keys (decoder inputs)"),
        "cross": ("target tokens (decoder inputs)", "source tokens"),
    }[kind]


def plot_attention(
    matrix: np.ndarray, query_labels: Sequence[str], key_labels: Sequence[str], title: str = "",
    ax=None, *, rows: str = "queries", columns: str = "keys", max_labels: int = 60,
) -> Figure:
    """Heat map of one (T_query, T_key) attention matrix with token labels.

    The title and axis labels state the convention (``rows = queries, columns = keys``;
    pass ``rows="target tokens"`` for cross-attention). Tick labels are dropped beyond
    ``max_labels`` tokens, where they would be unreadable anyway.
    """
    matrix = np.asarray(matrix)
    if matrix.shape != (len(query_labels), len(key_labels)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(query_labels)} query "
                         f"and {len(key_labels)} key labels")
    if ax is None:
        size = min(12.0, 2.5 + 0.22 * max(matrix.shape))
        fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-9), aspect="auto")
    ax.grid(False)  # a style's grid lines would cut through the cells
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    _label_axes(ax, query_labels, key_labels, max_labels)
    ax.set_ylabel(f"rows = {rows}")
    ax.set_xlabel(f"columns = {columns}")
    ax.set_title(f"{title}\n(rows = {rows}, columns = {columns})" if title else f"rows = {rows}, columns = {columns}")
    return ax.figure


def _label_axes(ax, query_labels: Sequence[str], key_labels: Sequence[str], max_labels: int,
                rows: bool = True, columns: bool = True) -> None:
    if rows and len(query_labels) <= max_labels:
        ax.set_yticks(range(len(query_labels)), query_labels, fontsize=8)
    else:
        ax.set_yticks([])
    if columns and len(key_labels) <= max_labels:
        ax.set_xticks(range(len(key_labels)), key_labels, fontsize=8, rotation=90)
    else:
        ax.set_xticks([])


def plot_attention_grid(record: AttentionRecord, kind: str, path: str | Path | None = None,
                        max_labels: int = 30) -> Figure:
    """A layers x heads grid of heat maps (like d2l's ``show_heatmaps``); saved to ``path`` if given.

    One colour scale for the whole grid, so heads can be compared by eye.
    """
    att = record.attention(kind)  # (L, H, Tq, Tk)
    n_layers, n_heads, t, s = att.shape
    q_labels, k_labels = record.query_labels(kind), record.key_labels(kind)
    rows, columns = _axis_names(kind)
    cell = min(3.5, max(1.8, 0.12 * max(t, s)))
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(cell * n_heads + 1.5, cell * n_layers + 1.0),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            image = ax.imshow(att[layer, head], cmap="viridis", vmin=0.0, vmax=float(att.max()), aspect="auto")
            ax.grid(False)
            _label_axes(ax, q_labels, k_labels, max_labels, rows=head == 0, columns=layer == n_layers - 1)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.6)
    fig.suptitle(f"{kind} attention: rows = {rows}, columns = {columns}")
    if path is not None:
        _save(fig, path)
    return fig


def plot_stat_distributions(df: pd.DataFrame, stat: str = "entropy", x: str = "kind", hue: str | None = "corpus",
                            path: str | Path | None = None, ax=None) -> Figure:
    """Violin plots of one statistic from ``stats_over_dataset`` frames, e.g. comparing corpora.

    Each violin pools every (example, layer, head) row of its group. When the frame has
    ``uniform_<stat>``, a black ``x`` marks the mean uniform-attention value of each group.
    """
    if stat not in df.columns:
        raise ValueError(f"no column {stat!r}; statistics in this frame: {[c for c in STATS if c in df.columns]}")
    hue = hue if hue in df.columns else None
    data = df.dropna(subset=[stat])
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    order = list(pd.unique(data[x]))
    hue_order = list(pd.unique(data[hue])) if hue else [None]
    sns.violinplot(data=data, x=x, y=stat, hue=hue, order=order, hue_order=hue_order if hue else None,
                   cut=0, inner="quartile", ax=ax)
    baseline = f"uniform_{stat}"
    if baseline in data.columns:
        width = 0.8 / len(hue_order)  # seaborn's default dodge: groups share 0.8 of each slot
        for k, level in enumerate(hue_order):
            part = data if level is None else data[data[hue] == level]
            means = part.groupby(x)[baseline].mean()
            xs = [order.index(cat) - 0.4 + width * (k + 0.5) for cat in means.index]
            ax.scatter(xs, means.values, marker="x", color="black", zorder=3,
                       label="uniform attention" if k == 0 else None)
        ax.legend(fontsize=8, title=hue)
    ax.set_title(f"{stat} per (example, layer, head)")
    if path is not None:
        _save(ax.figure, path)
    return ax.figure


def _save(fig: Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


# ============================================================== bertviz
def to_bertviz(record_or_outputs: AttentionRecord | Mapping, *, encoder_tokens: Sequence[str] | None = None,
               decoder_tokens: Sequence[str] | None = None) -> dict:
    """Keyword arguments for ``bertviz.head_view`` (or ``model_view``): ``head_view(**to_bertviz(record))``.

    Attention goes out as one tensor per layer, each (1, heads, T_query, T_key):
    ``encoder_attention`` / ``decoder_attention`` / ``cross_attention`` plus
    ``encoder_tokens`` / ``decoder_tokens`` for the encoder-decoder, or ``attention`` +
    ``tokens`` for the decoder-only model. A raw model output dict (batch of one, no
    padding) is accepted too; then pass the token labels as keywords.
    """
    if isinstance(record_or_outputs, AttentionRecord):
        atts = record_or_outputs.attentions
        layers = {k: [torch.from_numpy(a[layer])[None] for layer in range(a.shape[0])] for k, a in atts.items()}
        encoder_tokens = record_or_outputs.source_tokens
        decoder_tokens = record_or_outputs.decoder_tokens
    else:
        layers = {k: [a.detach().float().cpu() for a in record_or_outputs[key]]
                  for k, key in _OUTPUT_KEYS.items() if key in record_or_outputs}
        if "attentions" in record_or_outputs:
            layers["decoder"] = [a.detach().float().cpu() for a in record_or_outputs["attentions"]]
        if not layers or layers[next(iter(layers))][0].size(0) != 1:
            raise ValueError("to_bertviz needs attention of exactly one example (batch size 1); "
                             "use extract_attention to get an unpadded record")
    if "cross" in layers:
        return {"encoder_attention": layers["encoder"], "decoder_attention": layers["decoder"],
                "cross_attention": layers["cross"], "encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens}
    return {"attention": layers["decoder"], "tokens": decoder_tokens}


# ============================================================== explorer
@dataclass
class _Source:
    """One explorer entry: a model with its examples, or precomputed records."""

    model: BaseLanguageModel | None = None
    examples: Sequence = ()
    tokenizer: object = None
    records: Sequence[AttentionRecord] | None = None
    count: int = field(init=False)

    def __post_init__(self) -> None:
        self.count = len(self.records) if self.records is not None else len(self.examples)
        if not self.count:
            raise ValueError("an explorer source needs at least one example or record")


class AttentionExplorer:
    """Interactive attention browser built from ipywidgets.

    ``sources`` maps a name (model/corpus) to ``(model, examples, tokenizer)`` or to a
    list of precomputed ``AttentionRecord``s. Controls: source, example, kind, layer,
    head (or the average of heads) and a query token; the view shows the heat map (the
    chosen query's row is outlined) and the top-k keys of that query. Records are
    extracted lazily and cached per (source, example).

    Show it with ``display(explorer.widget)`` (or just ``explorer`` as a cell's last line).
    ``current_matrix()`` returns the matrix on screen, so tests can drive the widgets.
    """

    def __init__(self, sources: Mapping[str, tuple | Sequence[AttentionRecord]], top_k: int = 5) -> None:
        if not sources:
            raise ValueError("AttentionExplorer needs at least one source: {name: (model, examples, tokenizer)}")
        self._sources = {name: self._source(name, spec) for name, spec in sources.items()}
        self._cache: dict[tuple[str, int], AttentionRecord] = {}
        self.top_k = top_k
        self._shown: np.ndarray | None = None
        self._syncing = False
        style = {"description_width": "initial"}
        self.source = widgets.Dropdown(options=list(self._sources), description="model/corpus", style=style)
        self.example = widgets.IntSlider(min=0, max=0, description="example", continuous_update=False)
        self.kind = widgets.Dropdown(description="kind")
        self.layer = widgets.IntSlider(min=0, max=0, description="layer", continuous_update=False)
        self.head = widgets.Dropdown(description="head")
        self.query = widgets.Dropdown(description="query token")
        self.plot = widgets.Output()
        self.top_keys = widgets.HTML()
        controls = [self.source, self.example, self.kind, self.layer, self.head, self.query]
        for control in controls:
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([
            widgets.HBox(controls[:3]), widgets.HBox(controls[3:]), widgets.HBox([self.plot, self.top_keys]),
        ])
        self._sync()

    @staticmethod
    def _source(name: str, spec) -> _Source:
        if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], BaseLanguageModel):
            return _Source(model=spec[0], examples=spec[1], tokenizer=spec[2])
        if isinstance(spec, Sequence) and spec and all(isinstance(r, AttentionRecord) for r in spec):
            return _Source(records=spec)
        raise ValueError(f"source {name!r} must be (model, examples, tokenizer) or a list of AttentionRecord")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------- state
    def record(self) -> AttentionRecord:
        """The record of the selected source and example (extracted once, then cached)."""
        key = (self.source.value, self.example.value)
        if key not in self._cache:
            src = self._sources[key[0]]
            self._cache[key] = (src.records[key[1]] if src.records is not None
                                else extract_attention(src.model, src.examples[key[1]], src.tokenizer))
        return self._cache[key]

    def current_matrix(self) -> np.ndarray:
        """The (T_query, T_key) matrix shown right now."""
        return self._shown

    def current_top_keys(self) -> list[tuple[int, str, float]]:
        """(key position, key label, weight) of the top-k keys of the selected query token."""
        row = self._shown[self.query.value]
        labels = self.record().key_labels(self.kind.value)
        best = np.argsort(-row, kind="stable")[: self.top_k]
        return [(int(j), labels[j], float(row[j])) for j in best]

    # ----------------------------------------------------------- updates
    def _on_change(self, change) -> None:
        if not self._syncing:
            self._sync()

    def _sync(self) -> None:
        """Make every control's options fit the current selection (keeping values that still fit), then draw."""
        self._syncing = True
        try:
            self.example.max = self._sources[self.source.value].count - 1
            record = self.record()
            _set_options(self.kind, record.kinds)
            att = record.attentions[self.kind.value]
            self.layer.max = att.shape[0] - 1
            _set_options(self.head, [("average", -1)] + [(str(h), h) for h in range(att.shape[1])])
            labels = record.query_labels(self.kind.value)
            _set_options(self.query, [(f"{i}: {label}", i) for i, label in enumerate(labels)])
        finally:
            self._syncing = False
        self._render()

    def _render(self) -> None:
        record, kind = self.record(), self.kind.value
        head = None if self.head.value == -1 else self.head.value
        self._shown = record.matrix(kind, self.layer.value, head)
        rows, columns = _axis_names(kind)
        fig = Figure(figsize=(7.5, 6.5))  # not pyplot: no global state, no double display
        fig.subplots_adjust(left=0.17, right=0.92, bottom=0.17, top=0.9)  # fixed margins: one draw per frame
        ax = fig.subplots()
        head_name = "mean of heads" if head is None else f"head {head}"
        plot_attention(self._shown, record.query_labels(kind), record.key_labels(kind),
                       f"{kind}, layer {self.layer.value}, {head_name}", ax=ax, rows=rows, columns=columns)
        q = self.query.value
        ax.add_patch(Rectangle((-0.5, q - 0.5), self._shown.shape[1], 1, fill=False, edgecolor="red", linewidth=1.5))
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)  # explicit PNG: works whatever matplotlib backend the kernel uses
        with self.plot:
            self.plot.clear_output(wait=True)
            display(Image(data=png.getvalue(), format="png"))
        cells = "".join(f"<tr><td>{j}</td><td><code>{html.escape(label)}</code></td><td>{w:.3f}</td></tr>"
                        for j, label, w in self.current_top_keys())
        self.top_keys.value = (f"<b>top {self.top_k} keys of query {q} "
                               f"(<code>{html.escape(record.query_labels(kind)[q])}</code>)</b>"
                               f"<table><tr><th>key</th><th>token</th><th>weight</th></tr>{cells}</table>")


def _set_options(control: widgets.Dropdown, options: list) -> None:
    """Replace a dropdown's options, keeping its value when it is still offered."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    old = control.value
    if list(control.options) != options:
        control.options = options
    control.value = old if old in values else values[0]
