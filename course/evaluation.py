"""The course's measures of trained models, beside the library's loss, perplexity, ROUGE and source-use
gate (``reftx_lib.train.evaluation``): the LONGEST-3 baseline and the unigram control, the choice of
decoding settings, ROUGE along training (from the steps a run kept), and the loop proxies
of generated text (repetition rate, distinct-n, the share of distinct summaries).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from reftx_lib.model.transformer import BaseLanguageModel, ReferenceTransformer
from reftx_lib.train.checkpoint import load_checkpoint, model_from
from reftx_lib.train.device import resolve_device
from reftx_lib.train.evaluation import compute_rouge, generate_summaries, source_use


def unigram_loss(train_rows: list[list[int]], targets: list[int], vocab_size: int) -> float:
    """Mean NLL (nats) of ``targets`` under the add-one-smoothed unigram model of ``train_rows``.

    The control every language model must beat: it knows word frequencies and no context, so the
    ratio of its perplexity to a model's is what that model gains from context.
    """
    counts = torch.bincount(torch.tensor([t for r in train_rows for t in r]), minlength=vocab_size).double()
    log_probs = ((counts + 1) / (counts.sum() + vocab_size)).log()  # (V,)
    return float(-log_probs[torch.tensor(targets)].mean())


def score_summaries(
    model: ReferenceTransformer,
    test,
    tokenizer,
    num_beams: int,
    max_new_tokens: int,
    device: torch.device | str = "cpu",
) -> dict:
    """Decode every test dialogue and score it: ROUGE, the share of distinct summaries and the first
    summary as a sample. The one scoring that compares many runs (a size ladder, transfer variants),
    so that every run of a comparison is decoded and scored the same way."""
    predictions = generate_summaries(
        model,
        test,
        tokenizer,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        device=device,
        progress=False,
    )
    return {
        **compute_rouge(predictions, test["summary"]),
        "distinct_share": summary_diversity(predictions)["distinct_share"],
        "sample": predictions[0],
    }


def longest_3(dialogue: str) -> str:
    """The LONGEST-3 baseline of Gliwa et al. (2019): the three longest utterances, in dialogue order."""
    lines = [line.strip() for line in dialogue.splitlines() if line.strip()]
    keep = sorted(sorted(range(len(lines)), key=lambda i: len(lines[i]), reverse=True)[:3])
    return "\n".join(lines[i] for i in keep)


# Decoding settings tried on validation before the test set is decoded once (notebook 02): greedy and
# beam search, each with and without a ban on repeated trigrams; beam search also with a length penalty
# that favours longer summaries. An undertrained model loops, and the ban is the usual cure.
DECODING_GRID = (
    {"num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0},
    {"num_beams": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 3},
    {"num_beams": 4, "length_penalty": 1.0, "no_repeat_ngram_size": 0},
    {"num_beams": 4, "length_penalty": 1.0, "no_repeat_ngram_size": 3},
    {"num_beams": 4, "length_penalty": 2.0, "no_repeat_ngram_size": 3},
)


def rouge_mean(scores: dict[str, float]) -> float:
    """The mean of ROUGE-1, ROUGE-2 and ROUGE-L: the one number decoding settings are chosen by."""
    return (scores["rouge1"] + scores["rouge2"] + scores["rougeL"]) / 3


def choose_decoding(
    model: ReferenceTransformer,
    data,
    tokenizer,
    grid: tuple[dict, ...] = DECODING_GRID,
    max_new_tokens: int = 64,
    device: torch.device | str = "cpu",
) -> tuple[dict, list[dict]]:
    """The decoding settings of ``grid`` with the best ``rouge_mean`` on ``data`` (a validation subset),
    and every setting's scores, so the test set is decoded once with settings it never chose."""
    rows = []
    for setting in tqdm(grid, desc="decoding settings"):
        predictions = generate_summaries(
            model, data, tokenizer, max_new_tokens=max_new_tokens, device=device, progress=False, **setting
        )
        rows.append(
            {**setting, **compute_rouge(predictions, data["summary"]), **summary_diversity(predictions)}
        )
    best = max(rows, key=rouge_mean)
    return {k: best[k] for k in grid[0]}, rows


def kept_steps(folder: str | Path) -> dict[int, Path]:
    """The ``step-<N>.pt`` checkpoints a run with ``keep_every`` left in ``folder``, by step.

    They let a metric that is too slow to compute at every evaluation (ROUGE of generated
    summaries) be traced against training tokens after the run.
    """
    found = {int(p.stem.removeprefix("step-")): p for p in Path(folder).glob("step-*.pt")}
    return dict(sorted(found.items()))


def rouge_along_training(
    folder, data, tokenizer, decoding: dict, max_new_tokens: int = 64, device: torch.device | str = "cpu"
) -> list[dict]:
    """ROUGE of the weights a run kept every ``keep_every`` steps (``kept_steps``), on ``data``: where the
    score is heading when the run ends before the summaries are good."""
    rows = []
    kept = kept_steps(folder)
    for step, path in tqdm(kept.items(), desc="kept steps", total=len(kept)):
        ckpt = load_checkpoint(path)
        predictions = generate_summaries(
            model_from(ckpt),
            data,
            tokenizer,
            max_new_tokens=max_new_tokens,
            device=device,
            progress=False,
            **decoding,
        )
        rows.append(
            {"step": step, "tokens": ckpt["totals"]["tokens"], **compute_rouge(predictions, data["summary"])}
        )
    return rows


def source_use_along_training(
    folder,
    val_rows: list[list[int]],
    test,
    tokenizer,
    max_new_tokens: int,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """The source-use gate (``reftx_lib.train.evaluation.source_use``) of every kept ``step-<N>.pt``: how
    reading the dialogue is learned, step by step (notebook 02)."""
    rows = []
    kept = kept_steps(folder)
    for step, path in tqdm(kept.items(), desc="source use", total=len(kept)):
        ckpt = load_checkpoint(path)
        gate = source_use(
            model_from(ckpt), val_rows, test, tokenizer, max_new_tokens=max_new_tokens, device=device
        )
        rows.append({"step": step, "tokens": ckpt["totals"]["tokens"], **gate})
    return rows


def rouge_trend(rows: list[dict], target: float, key: str = "rouge1") -> dict[str, float]:
    """Where ``rouge_along_training`` rows are heading: the least-squares slope of ``key`` per doubling of
    training tokens over the last three kept steps, and the doublings more that slope would need to reach
    ``target`` (NaN when it is not rising). A straight line in log tokens, read as a direction, not a
    forecast: curves bend."""
    last = rows[-3:]
    if len(last) < 2:
        raise ValueError(f"a trend needs at least two kept steps, got {len(rows)}: lower keep_every")
    x = [math.log2(r["tokens"]) for r in last]
    y = [r[key] for r in last]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
    gap = target - y[-1]
    needed = 0.0 if gap <= 0 else (gap / slope if slope > 0 else float("nan"))
    return {"slope_per_doubling": slope, "doublings_to_target": needed, "last": y[-1], "target": target}


# ------------------------------------------------- automatic proxies for generated text
@torch.no_grad()
def continue_texts(
    model: BaseLanguageModel,
    prompts: list[list[int]],
    tokenizer,
    max_new_tokens: int,
    device: torch.device | str = "cpu",
    **options,
) -> list[str]:
    """The decoded continuation of every prompt (a token list): the prompt itself for a decoder-only model,
    the source for an encoder-decoder. Prompts of one length form one batch, in order of length, because a
    decoder-only model takes no padded prompt; ``options`` go to ``generate`` (a seeded ``generator``
    is drawn from batch by batch, so the same seed gives the same texts)."""
    device = resolve_device(device)
    model.to(device).eval()
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    out: list[str] = [""] * len(prompts)
    for n in sorted(by_length):
        index = by_length[n]
        batch = torch.tensor([prompts[i] for i in index], device=device)  # (B, n)
        new = model.generate(batch, max_new_tokens=max_new_tokens, **options)  # (B, <= max_new_tokens)
        for i, row in zip(index, new.tolist()):
            out[i] = tokenizer.decode(row, skip_special_tokens=True)
    return out


def continuation_quality(texts: list[str]) -> dict[str, float]:
    """The loop proxies of a set of continuations: their word 4-gram repetition rate, distinct-2 and mean
    length in words (a model stuck in a loop repeats, a silent one writes nothing)."""
    return {
        "repetition rate (4-grams)": repetition_rate(texts, 4),
        "distinct-2": distinct_n(texts, 2),
        "words per continuation": sum(len(t.split()) for t in texts) / max(1, len(texts)),
    }


def _units(text_or_tokens) -> list:
    """Words of a string (split on whitespace), or the items of a token sequence as they are."""
    return text_or_tokens.split() if isinstance(text_or_tokens, str) else list(text_or_tokens)


def _ngrams(units: list, n: int) -> list[tuple]:
    return [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]


def _as_list(sequences) -> list:
    """One text (str) or many texts / token sequences -> a list of them."""
    return [sequences] if isinstance(sequences, str) else list(sequences)


def repetition_rate(sequences, n: int = 4) -> float:
    """Share of n-grams that repeat an n-gram seen earlier in the *same* sequence.

    ``sequences`` is one text, a list of texts (scored on whitespace words) or a list
    of token-id lists. Counts are pooled over all sequences (each n-gram weighs the
    same). 0 means no n-gram is ever repeated; a greedy decoder stuck in a loop
    approaches 1. NaN when no sequence has n units.

    >>> repetition_rate("a b c a b c a b c", n=3)  # 7 trigrams, 4 of them seen before
    0.5714285714285714
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    repeated = total = 0
    for seq in _as_list(sequences):
        seen: set[tuple] = set()
        for gram in _ngrams(_units(seq), n):
            total += 1
            repeated += gram in seen
            seen.add(gram)
    return repeated / total if total else float("nan")


def distinct_n(sequences, n: int = 2) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams over all n-grams, pooled across ``sequences``.

    Higher means more varied text; the same inputs as ``repetition_rate``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [g for seq in _as_list(sequences) for g in _ngrams(_units(seq), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


# Below this share of distinct summaries a model mostly repeats itself, and its ROUGE scores a few generic
# sentences against every reference rather than readings of the dialogues: it cannot rank such a model.
DISTINCT_FLOOR = 0.5


def summary_diversity(predictions: list[str]) -> dict[str, float]:
    """Do the summaries depend on the dialogue? The share of distinct summaries (1: all differ; a model
    that writes one summary for every dialogue scores 1/n), their trigram repetition rate, distinct-2."""
    if not predictions:
        raise ValueError("no summaries to measure: pass at least one")
    return {
        "distinct_share": len(set(predictions)) / len(predictions),
        "repetition_rate": repetition_rate(predictions, n=3),
        "distinct_2": distinct_n(predictions, n=2),
    }
