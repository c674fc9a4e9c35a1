"""Held-out loss and perplexity (token-weighted, so batch sizes cannot skew it), generated summaries and
ROUGE. ``second_half_only`` scores both architectures on the same second-half tokens (Exp 1)."""

from __future__ import annotations

import math
import re
import sys

import torch
from rouge_score import rouge_scorer
from tqdm.auto import tqdm

from ..constants import IGNORE_INDEX
from ..data.batching import pad_batch, token_budget_batches
from ..model.transformer import BaseLanguageModel, ReferenceTransformer
from .device import resolve_device

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@torch.no_grad()
def evaluate_loss(
    model: BaseLanguageModel,
    rows: list[list[int]],
    batch_tokens: int,
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
    label_rows: list[list[int]] | None = None,
) -> dict[str, float]:
    """Token-weighted loss and perplexity of ``rows`` (labels: the rows, or ``label_rows`` with -100 where
    nothing counts); ``max_batches`` takes the same seeded subset at each call, so validations compare."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    batches = token_budget_batches([len(r) for r in rows], batch_tokens, shuffle=True, seed=0)[:max_batches]
    total_nll, total_tokens = 0.0, 0
    for index in batches:
        ids = pad_batch([rows[i] for i in index]).to(device)  # (B, T)
        labels = ids if label_rows is None else pad_batch([label_rows[i] for i in index], IGNORE_INDEX)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(ids, labels=labels.to(device))
        n = int(out["n_tokens"])
        total_nll, total_tokens = total_nll + float(out["loss"]) * n, total_tokens + n
    model.train(was_training)
    if total_tokens == 0:
        raise ValueError(
            f"no tokens to score: {len(rows)} row(s) in {len(batches)} batch(es), and every label is "
            "masked or padding; pass rows with at least one counted token"
        )
    loss = total_nll / total_tokens
    return {"loss": loss, "ppl": perplexity_of(loss), "tokens": total_tokens}


def perplexity_of(loss: float) -> float:
    """exp(loss), and ``inf`` (not an OverflowError) for a loss too large for a float: a diverged model."""
    return math.exp(loss) if loss < math.log(sys.float_info.max) else math.inf


def perplexity(
    model: BaseLanguageModel,
    data,
    second_half_only: bool = False,
    batch_tokens: int = 8192,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Perplexity on held-out rows: encoder-decoder ones on their target (the second half), decoder-only ones
    on every token or, ``second_half_only`` (needs ``source_len``), on what the encoder-decoder predicts."""
    rows = data["input_ids"]
    label_rows = None
    if second_half_only and not model.is_encoder_decoder:
        # Label i scores the prediction at i - 1; 0 is BOS, 1..source_len the first half: mask those.
        label_rows = [[IGNORE_INDEX] * (n + 1) + r[n + 1 :] for r, n in zip(rows, data["source_len"])]
    return evaluate_loss(model, rows, batch_tokens, device, label_rows=label_rows)


def source_ablation(
    model: ReferenceTransformer,
    rows: list[list[int]],
    batch_tokens: int,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """Does the decoder use its source? The target loss of packed ``rows`` with their own sources, and with
    every target paired with another row's source (a seeded derangement: no row keeps its own).

    A model that ignores its source scores both alike (``gain`` near 0); the more the target depends
    on what the source says, the larger ``gain`` (nats per target token).
    """
    if len(rows) < 2:
        raise ValueError(f"a source ablation needs at least 2 rows to swap sources between, got {len(rows)}")
    parts = [model.split_packed_row(r) for r in rows]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    other = {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}  # a cycle: nobody keeps theirs
    swapped = [parts[other[i]][0] + [model.config.sep_token_id] + parts[i][1] for i in range(len(rows))]
    own = evaluate_loss(model, rows, batch_tokens, device)["loss"]
    shuffled = evaluate_loss(model, swapped, batch_tokens, device)["loss"]
    return {"own_source": own, "other_source": shuffled, "gain": shuffled - own}


@torch.no_grad()
def generate_summaries(
    model: ReferenceTransformer,
    data,
    tokenizer,
    batch_size: int = 32,
    num_beams: int = 4,
    max_new_tokens: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
) -> list[str]:
    """Decode a summary for every packed row of ``data`` (sources only; references are never shown)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (dialogues decoded at once), got {batch_size}")
    device = resolve_device(device)
    model.to(device).eval()
    sources = [model.split_packed_row(r)[0] for r in data["input_ids"]]
    out: list[str] = []
    for start in tqdm(range(0, len(sources), batch_size), desc="generate", disable=not progress):
        batch = pad_batch(sources[start : start + batch_size]).to(device)  # (B, S)
        tokens = model.generate(
            batch,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        out += tokenizer.batch_decode(tokens.tolist(), skip_special_tokens=True)
    return [s.strip() for s in out]


def _sentences(text: str) -> str:
    """One sentence per line, as ROUGE-Lsum expects (a regex split: nltk's punkt needs a download)."""
    return "\n".join(s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s)


def compute_rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F1 x 100 with Porter stemming (Google's ``rouge-score``)."""
    if not predictions:
        raise ValueError(
            "no predictions to score: ROUGE of an empty set is undefined; pass at least one pair"
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references: they must pair up"
        )
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    scores = [scorer.score(_sentences(ref), _sentences(pred)) for pred, ref in zip(predictions, references)]
    return {key: 100 * sum(s[key].fmeasure for s in scores) / len(predictions) for key in ROUGE_KEYS}


# The source-use gate: does a summarizer read its dialogue? Each threshold is met by reading, not by style.
# Another example's dialogue must cost >= 0.3 nats per summary token: a model that reads pays for names,
# places and plans it cannot find (the committed mini baseline, which barely reads, paid 0.038).
READS_MIN_GAIN_NATS = 0.3
# At least 90% of greedy summaries must differ: a summary of *this* dialogue is rarely another's, while a
# language model of summaries writes a handful of generic ones (the mini baseline: 17%).
READS_MIN_DISTINCT_SHARE = 0.9
# At least 90% of the speaker names a summary mentions must be its own dialogue's speakers: names are
# the facts a summary cannot guess, so naming another dialogue's people is a summary not read off.
READS_MIN_NAME_PRECISION = 0.9
_SPEAKER = re.compile(r"^\s*([A-Z][\w'.-]*(?: [A-Z][\w'.-]*)?):", re.MULTILINE)  # "Amanda:" opens a turn


def speaker_name_precision(summaries: list[str], dialogues: list[str]) -> dict[str, float]:
    """Of the speaker names (from any dialogue's ``Name:`` turns) that the summaries mention, the share
    that speak in that summary's own dialogue; ``mentions`` counts them (precision 0 when there are none)."""
    speakers = [set(_SPEAKER.findall(d)) for d in dialogues]
    names = {n: re.compile(rf"\b{re.escape(n)}\b") for n in set().union(*speakers)}  # compiled once
    own = mentions = 0
    for summary, mine in zip(summaries, speakers):
        said = {n for n, pattern in names.items() if pattern.search(summary)}
        own, mentions = own + len(said & mine), mentions + len(said)
    return {"precision": own / mentions if mentions else 0.0, "mentions": mentions}


def source_use(
    model: ReferenceTransformer,
    val_rows: list[list[int]],
    test,
    tokenizer,
    batch_tokens: int = 4096,
    device: torch.device | str = "cpu",
    max_new_tokens: int = 64,
    progress: bool = False,
) -> dict:
    """The gate ``reads_source``: the ablation gain over ``val_rows`` (held-out packed rows, >= 200), the
    share of distinct greedy summaries of ``test`` and their speaker-name precision, with the thresholds
    (``READS_MIN_*``). ROUGE or attention of a model that fails it says little about the task."""
    gain = source_ablation(model, val_rows, batch_tokens, device)["gain"]
    summaries = generate_summaries(
        model, test, tokenizer, num_beams=1, max_new_tokens=max_new_tokens, device=device, progress=progress
    )
    names = speaker_name_precision(summaries, list(test["dialogue"]))
    distinct = len(set(summaries)) / len(summaries)
    return {
        "ablation_gain_nats": gain,
        "ablation_rows": len(val_rows),
        "distinct_share_greedy": distinct,
        "speaker_name_precision": names["precision"],
        "speaker_name_mentions": names["mentions"],
        "thresholds": {
            "gain": READS_MIN_GAIN_NATS,
            "distinct": READS_MIN_DISTINCT_SHARE,
            "names": READS_MIN_NAME_PRECISION,
        },
        "reads_source": gain >= READS_MIN_GAIN_NATS
        and distinct >= READS_MIN_DISTINCT_SHARE
        and names["precision"] >= READS_MIN_NAME_PRECISION,
    }
