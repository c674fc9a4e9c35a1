"""The few setup steps every experiment shares: data at a budget's size, a model by name, a train config,
and the course's named models (``CourseModel``): the SAMSum baseline, Exp 1's raw-text models (one of
which is Exp 2's pretrained decoder-only model), Exp 4's ladder and Exp 5's fine-tuning runs.

Notebooks and the command line call these so that "the SAMSum baseline" or
"the raw-text midpoint split" means the same thing everywhere: a notebook that needs a
model another notebook trains calls the same function, and ``fit`` then reuses that checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict

from course.accounting import num_parameters
from course.data_stats import tokenizer_info
from course.scaling import SizeSpec, size_name, size_overrides
from course.transfer import EQUAL_COMPUTE, TRANSFER_VARIANTS, transfer_model
from reftx_lib.constants import EOS_ID, SEP_ID
from reftx_lib.data.corpora import load_corpus
from reftx_lib.data.preprocessing import encode_blocks, encode_documents, encode_midpoint, encode_samsum
from reftx_lib.model.config import ModelConfig
from reftx_lib.model.transformer import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.paths import repo_root
from reftx_lib.train.trainer import History, TrainConfig, fit

MODEL_KINDS = {
    "encdec": ReferenceTransformer,
    "deconly": ReferenceDecoderOnly,
    "prefixlm": ReferenceDecoderOnly,
}
RAWTEXT_MODES = ("midpoint", "prefix", "documents", "blocks")


def checkpoint_dir(budget: str, name: str) -> Path:
    """Where model ``name`` trained at ``budget`` is kept for later notebooks (``REFTX_CHECKPOINT_DIR``
    moves ``<repo>/checkpoints``)."""
    env = os.environ.get("REFTX_CHECKPOINT_DIR")
    return (Path(env).expanduser() if env else repo_root() / "checkpoints") / budget / name


def samsum_data(cfg: dict, tokenizer) -> tuple[DatasetDict, dict]:
    """SAMSum as packed ``dialogue [SEP] summary [EOS]`` rows, capped as the budget says."""
    return encode_samsum(
        load_corpus("samsum"),
        tokenizer,
        max_source_len=cfg["max_source_len"],
        max_target_len=cfg["max_target_len"],
    )


def rawtext_data(cfg: dict, tokenizer, mode: str) -> tuple[DatasetDict, dict]:
    """The textbooks corpus in one of three layouts, on the budget's document subset.

    ``midpoint``: the seed's ``first half [SEP] second half`` rows (encoder-decoder);
    ``prefix``: the same rows after a ``[BOS]`` (the prefix LM);
    ``documents``: the same chunks as whole ``[BOS] doc [EOS]`` rows (decoder-only,
    exactly comparable); ``blocks``: documents concatenated into fixed-length blocks
    (decoder-only pretraining, no padding).
    """
    if mode not in RAWTEXT_MODES:
        raise ValueError(f"unknown raw-text mode {mode!r}; allowed values: {list(RAWTEXT_MODES)}")
    ds = load_corpus("textbooks")
    limits = {
        "train": cfg.get("n_train_docs"),
        "validation": cfg.get("n_eval_docs"),
        "test": cfg.get("n_eval_docs"),
    }
    ds = DatasetDict(
        {split: d.select(range(min(len(d), limits[split] or len(d)))) for split, d in ds.items()}
    )
    if mode == "blocks":
        return encode_blocks(ds, tokenizer, block_size=cfg["block_size"])
    if mode == "documents":
        return encode_documents(ds, tokenizer, max_doc_tokens=cfg["max_doc_tokens"])
    return encode_midpoint(ds, tokenizer, max_doc_tokens=cfg["max_doc_tokens"], bos=mode == "prefix")


def exp1_layouts(cfg: dict, tokenizer) -> tuple[dict[str, DatasetDict], dict[str, dict]]:
    """The three layouts Exp 1's arms read (``midpoint``, ``documents``, ``prefix``) as ``(data, stats)``
    by layout, checked to cut the very same chunks: the arms differ in how they read a chunk, never in
    which chunks they read."""
    encoded = {layout: rawtext_data(cfg, tokenizer, layout) for layout in ("midpoint", "documents", "prefix")}
    mid, docs = encoded["midpoint"][0], encoded["documents"][0]
    for split in mid:
        same = mid[split]["source_len"][:] == docs[split]["source_len"][:] and [
            len(r) for r in mid[split]["input_ids"]
        ] == [len(r) for r in docs[split]["input_ids"]]
        if not same:
            raise ValueError(f"{split}: the midpoint and documents layouts cut different chunks")
    return {k: v[0] for k, v in encoded.items()}, {k: v[1] for k, v in encoded.items()}


def build_model(kind: str, size: str, vocab_size: int, seed: int = 0, **overrides) -> BaseLanguageModel:
    """A freshly initialised model: ``kind`` is ``encdec`` or ``deconly``, ``size`` a MODEL_SIZES name."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; allowed values: {list(MODEL_KINDS)}")
    torch.manual_seed(seed)
    prefix_lm = {"prefix_lm": True} if kind == "prefixlm" else {}  # the decoder-only model as a prefix LM
    return MODEL_KINDS[kind].from_size(size, vocab_size=vocab_size, **prefix_lm, **overrides)


def train_config(
    cfg: dict,
    *,
    name: str,
    budget: str,
    data: str,
    tokenizer,
    seed: int = 0,
    device: str = "auto",
    **overrides,
) -> TrainConfig:
    """A TrainConfig from a budget section, checkpointed under ``checkpoints/<budget>/<name>``.

    The section names every setting that shapes the run; none has a default here, so a run's
    settings are read in one place (``course.budgets``), never half there and half here.
    """
    cfg = {**cfg, **overrides}
    missing = [k for k in ("max_steps", "lr", "warmup_steps", "batch_tokens", "eval_every") if k not in cfg]
    if missing:
        raise ValueError(
            f"the budget section for {name!r} lacks {missing}: add them to its table in "
            "course/budgets.py, or merge in the section it borrows them from (e.g. exp1_settings)"
        )
    info = tokenizer_info(tokenizer)
    values = dict(
        max_steps=cfg["max_steps"],
        lr=cfg["lr"],
        warmup_steps=cfg["warmup_steps"],
        batch_tokens=cfg["batch_tokens"],
        eval_every=cfg["eval_every"],
        eval_batches=cfg.get("eval_batches"),
        keep_every=cfg.get("keep_every"),
        seed=seed,
        device=device,
        checkpoint_dir=str(checkpoint_dir(budget, name)),
        data=data,
        tokenizer={"key": info["key"], "vocab_size": info["vocab_size"]},
    )
    return TrainConfig(**{**values, **overrides})


# Dialogues and summaries vary in length apart, and an encoder-decoder pads them apart: its SAMSum batches
# are costed and bucketed by both (padding 6% of the computed tokens, against 14% by their sum;
# docs/performance.md). Exp 1 keeps the plain batches, so that its arms train on the same batches.
SAMSUM = dict(pad_apart=True)


@dataclass
class CourseModel:
    """One named model of the course before training: the model, the data it trains on, and its run.

    ``fit()`` trains it, or reuses (resumes) the checkpoint this very run wrote, so every
    notebook that asks for the same course model gets the same weights.
    """

    model: BaseLanguageModel
    data: DatasetDict  # train / validation / test
    stats: dict  # the encoding's per-split counts (truncation, supervised tokens, ...)
    config: TrainConfig

    def fit(self) -> History:
        """Train on the train split, evaluating on validation (``reftx_lib.train.trainer.fit``)."""
        return fit(self.model, self.data["train"], self.data["validation"], self.config)


def reading_warmup_data(data: DatasetDict, window: int, random_start: bool, seed: int = 0) -> DatasetDict:
    """The warm-up rows of ``samsum_warmup``: each dialogue, then ``window`` of its tokens again
    (``dialogue [SEP] a stretch of it [EOS]``), from its start, or with ``random_start`` from a start drawn
    per row (seeded by the row's index). After its first token a random stretch can only be read off the
    dialogue by looking its words up (find where the last token sits, copy the next), which is what a
    summary's names and facts need. No outside data, no summary."""

    def rows(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out = []
        for row, index in zip(batch["input_ids"], indices):
            source = row[: row.index(SEP_ID)]
            last = max(0, len(source) - window)
            start = int(np.random.default_rng([seed, index]).integers(0, last + 1)) if random_start else 0
            out.append(source + [SEP_ID] + source[start : start + window] + [EOS_ID])
        return {"input_ids": out}

    return DatasetDict(
        {
            split: ds.map(rows, batched=True, with_indices=True, remove_columns=ds.column_names)
            for split, ds in data.items()
            if split != "test"
        }
    )


def samsum_warmup(
    budget: str,
    settings: dict,
    tokenizer,
    seed: int = 0,
    device: str = "auto",
    data: DatasetDict | None = None,
) -> CourseModel:
    """The baseline's first step when its budget sets ``warmup_steps_reading`` (checkpoint ``samsum-warmup``):
    the same model trained to copy stretches of the training dialogues (``reading_warmup_data``), so that
    it has learned to read its source before it learns what summaries sound like. ``data``: SAMSum as
    ``samsum_data`` encodes it, if the caller has it already."""
    cfg = settings["samsum"]
    data = samsum_data(cfg, tokenizer)[0] if data is None else data
    warm = reading_warmup_data(data, cfg["warmup_window"], cfg["warmup_random_start"], seed)
    model = build_model("encdec", cfg["model"], len(tokenizer), seed=seed, dropout=cfg["dropout"])
    steps = cfg["warmup_steps_reading"]
    config = train_config(
        {**cfg, "max_steps": steps, "eval_every": max(1, steps // 4), "keep_every": None},
        name="samsum-warmup",
        budget=budget,
        data=f"samsum-dialogues:window{cfg['warmup_window']}:random{cfg['warmup_random_start']}",
        tokenizer=tokenizer,
        seed=seed,
        device=device,
        **SAMSUM,
    )
    return CourseModel(model, warm, {}, config)


def samsum_baseline(
    budget: str, settings: dict, tokenizer, seed: int = 0, device: str = "auto", plain: bool = False
) -> CourseModel:
    """Notebook 02's SAMSum baseline encoder-decoder (checkpoint ``samsum-baseline``): after the reading
    warm-up (``samsum_warmup``, trained here or reused) if the budget has one, unless ``plain``
    (checkpoint ``samsum-plain``: the recipe without it, notebook 02's contrast).

    Exp 3's attention study and Exp 5's comparison point back to this very run.
    """
    cfg = settings["samsum"]
    if plain or not cfg.get("warmup_steps_reading"):
        return _samsum_model(
            cfg, "samsum-plain" if plain else "samsum-baseline", budget, tokenizer, seed, device
        )
    course_model = _samsum_model(cfg, "samsum-baseline", budget, tokenizer, seed, device)
    warm = samsum_warmup(budget, settings, tokenizer, seed, device, data=course_model.data)
    history = warm.fit()
    course_model.model.load_state_dict(warm.model.state_dict())
    tag = f"{course_model.config.data}:after-warmup:{len(history)}steps:{history.best_val_loss():.5f}"
    course_model.config = replace(course_model.config, data=tag)  # a new warm-up never reuses this run
    return course_model


def _samsum_model(cfg: dict, name: str, budget: str, tokenizer, seed: int, device: str) -> CourseModel:
    """An encoder-decoder trained on SAMSum with ``cfg``, checkpointed as ``name``."""
    data, stats = samsum_data(cfg, tokenizer)
    model = build_model("encdec", cfg["model"], len(tokenizer), seed=seed, dropout=cfg["dropout"])
    config = train_config(
        cfg, name=name, budget=budget, data="samsum", tokenizer=tokenizer, seed=seed, device=device, **SAMSUM
    )
    return CourseModel(model, data, stats, config)


def exp3_settings(settings: dict) -> dict:
    """Exp 3's SAMSum control: the SAMSum data and length caps, trained exactly as Exp 1's encoder-decoder
    (``exp1_settings``: its size, steps, schedule and batch), so that Exp 3's contrast of the two models
    differs only in the data."""
    exp1 = exp1_settings(settings)
    return {
        **settings["samsum"],
        **{k: exp1[k] for k in ("model", "max_steps", "eval_every", "batch_tokens")},
        "keep_every": None,
    }


def exp3_samsum_model(
    budget: str, settings: dict, tokenizer, seed: int = 0, device: str = "auto"
) -> CourseModel:
    """Exp 3's SAMSum encoder-decoder (``exp3_settings``: Exp 1's recipe on SAMSum), checkpointed as
    ``exp3-samsum-matched``. It was notebook 02's baseline where the two recipes were one; since the
    baseline trains by epochs after a reading warm-up (issue 30), it is always its own run."""
    name = "exp3-samsum-matched" if seed == 0 else f"exp3-samsum-matched-seed{seed}"
    return _samsum_model(exp3_settings(settings), name, budget, tokenizer, seed, device)


# Exp 1's models: name -> (model kind, raw-text layout, checkpoint name). The encoder-decoder reads
# midpoint rows; both decoder-only models read the same chunks whole. Exp 3 analyses the first.
EXP1_RUNS = {
    "encdec": ("encdec", "midpoint", "exp1-encdec-midpoint"),
    "deconly": ("deconly", "documents", "exp1-deconly-documents"),
    "deconly_matched": ("deconly", "documents", "exp1-deconly-documents-matched"),
}
# The fourth arm: the prefix LM (the decoder-only weights reading the first half bidirectionally) reads
# the midpoint rows after a [BOS] and, like the encoder-decoder, learns only the second half.
EXP1_PREFIX_LM = {"prefix_lm": ("prefixlm", "prefix", "exp1-prefixlm-midpoint")}
EXP1_ARMS = {**EXP1_RUNS, **EXP1_PREFIX_LM}


def exp1_arms(settings: dict) -> dict[str, tuple[str, str, str]]:
    """The Exp 1 arms a budget trains (its ``rawtext`` section's ``arms``), in ``EXP1_ARMS`` order."""
    arms = settings["rawtext"]["arms"]
    unknown = sorted(set(arms) - set(EXP1_ARMS))
    missing = sorted({"encdec", "deconly", "prefix_lm"} - set(arms))
    problems = [f"name unknown arms {unknown} (allowed: {list(EXP1_ARMS)})"] if unknown else []
    problems += [f"lack {missing}: every verdict of Exp 1 needs them"] if missing else []
    if problems:
        raise ValueError(
            f"the rawtext budget's arms {arms} {'; '.join(problems)}; fix the `arms` row in course/budgets.py"
        )
    return {name: spec for name, spec in EXP1_ARMS.items() if name in arms}


def exp1_settings(settings: dict) -> dict:
    """Exp 1's training settings: the raw-text section's model size, steps, batch, evaluation and data,
    with the SAMSum baseline's dropout, lr and warm-up (the architecture is used unchanged)."""
    samsum = settings["samsum"]
    keep = ("dropout", "lr", "warmup_steps")
    return {**settings["rawtext"], **{k: samsum[k] for k in keep}}


def matched_d_ff(size: str, vocab_size: int) -> int:
    """The decoder-only ``d_ff`` that gives it the encoder-decoder's parameter count at ``size``.

    Depth and width stay; only the feed-forward layer widens (parameters grow linearly in d_ff).
    """

    def total(kind: str, **overrides) -> int:
        with torch.device("meta"):  # count only: no memory, no initialization
            return num_parameters(build_model(kind, size, vocab_size, **overrides))["total"]

    d_ff = ModelConfig.from_size(size, vocab_size).d_ff
    per_unit = total("deconly", d_ff=d_ff + 1) - total("deconly", d_ff=d_ff)
    return d_ff + round((total("encdec") - total("deconly", d_ff=d_ff)) / per_unit)


def exp1_model(
    name: str,
    budget: str,
    settings: dict,
    tokenizer,
    seed: int = 0,
    device: str = "auto",
    encoded: tuple[DatasetDict, dict] | None = None,
) -> CourseModel:
    """One of Exp 1's models (``EXP1_ARMS``), trained with ``exp1_settings``; seeds other than 0 are
    checkpointed as ``<checkpoint>-seed<k>``.

    ``encoded``: the layout's (data, stats) from ``rawtext_data``, when the caller has them already.
    """
    if name not in EXP1_ARMS:
        raise ValueError(f"unknown Exp 1 model {name!r}; allowed values: {list(EXP1_ARMS)}")
    kind, layout, checkpoint = EXP1_ARMS[name]
    cfg = exp1_settings(settings)
    data, stats = encoded or rawtext_data(cfg, tokenizer, layout)
    overrides = {"d_ff": matched_d_ff(cfg["model"], len(tokenizer))} if name == "deconly_matched" else {}
    model = build_model(kind, cfg["model"], len(tokenizer), seed=seed, dropout=cfg["dropout"], **overrides)
    config = train_config(
        cfg,
        name=checkpoint if seed == 0 else f"{checkpoint}-seed{seed}",
        budget=budget,
        data=f"textbooks-{layout}-{cfg['max_doc_tokens']}-docs{cfg.get('n_train_docs') or 'all'}",
        tokenizer=tokenizer,
        seed=seed,
        device=device,
    )
    return CourseModel(model, data, stats, config)


def exp2_settings(settings: dict) -> dict:
    """Exp 2's settings: Exp 1's (the raw-text section's model, steps and data with the SAMSum baseline's
    optimisation), with the SAMSum section's decoding settings that Exp 5 needs."""
    return {**settings["samsum"], **exp1_settings(settings)}


def exp2_pretraining(budget: str, settings: dict, tokenizer, device: str = "auto") -> CourseModel:
    """Exp 2's decoder-only language model: Exp 1's decoder-only arm at seed 0 (whole textbook chunks,
    checkpoint ``exp1-deconly-documents``), one run that notebooks 03, 04 and 07 share (it was a second run
    on packed blocks until the course's time showed the cost). Exp 5 fine-tunes it."""
    return exp1_model("deconly", budget, settings, tokenizer, seed=0, device=device)


def exp4_settings(settings: dict) -> dict:
    """Exp 4's settings: the SAMSum baseline's lr, warm-up, dropout, length caps and beams, with the
    scaling section's ladder, seeds, steps, batch and evaluation."""
    return {**settings["samsum"], **settings["scaling"]}


def exp4_model(
    size: SizeSpec,
    seed: int,
    budget: str,
    settings: dict,
    tokenizer,
    encoded: tuple[DatasetDict, dict],
    device: str = "auto",
) -> CourseModel:
    """One rung of Exp 4's ladder: the SAMSum baseline's encoder-decoder at ``size`` (a MODEL_SIZES
    name or explicit widths), checkpointed as ``exp4-<size>-seed<seed>``; ``encoded`` is SAMSum from
    ``samsum_data``, shared by every rung."""
    cfg = exp4_settings(settings)
    base, overrides = size_overrides(size)
    model = build_model("encdec", base, len(tokenizer), seed=seed, dropout=cfg["dropout"], **overrides)
    config = train_config(
        cfg,
        name=f"exp4-{size_name(size)}-seed{seed}",
        budget=budget,
        data=f"samsum-src{cfg['max_source_len']}-tgt{cfg['max_target_len']}",
        tokenizer=tokenizer,
        seed=seed,
        device=device,
        **SAMSUM,
    )
    return CourseModel(model, *encoded, config)


def exp5_settings(settings: dict) -> dict:
    """Exp 5's fine-tuning settings: the SAMSum baseline's lr, warm-up, dropout, length caps and beams,
    with the transfer section's steps, batch, evaluation, fractions, variants and seeds."""
    transfer = settings["transfer"]
    return {**settings["samsum"], **transfer, "max_steps": transfer["finetune_steps"], "keep_every": None}


def equal_compute_steps(settings: dict) -> int:
    """Fine-tuning steps that give a fresh model the transferred model's whole budget in training tokens:
    Exp 2's pretraining steps (at its batch size) plus the fine-tuning steps."""
    pre = exp2_settings(settings)
    cfg = exp5_settings(settings)
    return round(pre["max_steps"] * pre["batch_tokens"] / cfg["batch_tokens"]) + cfg["max_steps"]


def exp5_subsets(train, fractions: list[float], seed: int = 0) -> dict:
    """The nested training subsets of Exp 5: the first ``fraction`` of one seeded shuffle of the training
    dialogues (so the 10% subset lies inside every larger one), kept in the corpus order."""
    order = np.random.default_rng(seed).permutation(len(train))
    return {f: train.select(np.sort(order[: max(1, round(f * len(train)))])) for f in fractions}


def exp5_plan(cfg: dict, seed: int = 0) -> list[tuple[float, str, int]]:
    """``(fraction, variant, seed)`` of every Exp 5 run: each fraction's variants (the section's
    ``variants`` by fraction; all of them when it names none) at ``seed``; at the smallest fraction,
    ``scratch`` and ``transfer`` also at every other seed of ``seeds`` (the noise estimate)."""
    everything = [*TRANSFER_VARIANTS, EQUAL_COMPUTE]
    plan = []
    for f in cfg["fractions"]:
        variants = cfg.get("variants", {}).get(str(f), everything)
        unknown = sorted(set(variants) - set(everything))
        if unknown:
            raise ValueError(
                f"the transfer budget names unknown variants {unknown} at fraction {f}; allowed: {everything}"
            )
        plan += [(f, v, seed) for v in variants]
        if f == min(cfg["fractions"]):
            extra = [s for s in cfg["seeds"] if s != seed]
            plan += [(f, v, s) for s in extra for v in ("scratch", "transfer") if v in variants]
    return plan


def exp5_model(
    variant: str,
    fraction: float,
    seed: int,
    *,
    pretraining: CourseModel,
    pre_history: History,
    subset,
    samsum: DatasetDict,
    budget: str,
    settings: dict,
    tokenizer,
    data_seed: int = 0,
    device: str = "auto",
) -> CourseModel:
    """One Exp 5 fine-tuning run: ``variant``'s initial model (``transfer_model``) on ``subset`` (the
    ``fraction`` drawn with ``data_seed``), checkpointed as ``exp5-<variant>-<fraction>-seed<seed>``.

    Its data tag names the pretraining run (steps and best loss), so a new pretraining never reuses a
    fine-tuned checkpoint of the old one; ``EQUAL_COMPUTE`` trains ``equal_compute_steps``.
    """
    cfg = exp5_settings(settings)
    dec_model = pretraining.model
    lengths = (cfg["max_source_len"], cfg["max_target_len"], cfg["max_new_tokens"])
    max_len = max(dec_model.config.max_len, *lengths)
    model = transfer_model(variant, dec_model, seed=seed, max_len=max_len)
    steps = equal_compute_steps(settings) if variant == EQUAL_COMPUTE else cfg["max_steps"]
    pre_tag = f"exp2:{len(pre_history)}steps:{pre_history.best_val_loss():.5f}"
    config = train_config(
        cfg,
        name=f"exp5-{variant}-{fraction:g}-seed{seed}",
        budget=budget,
        data=f"samsum-frac{fraction:g}-seed{data_seed}:{variant}:{pre_tag}",
        tokenizer=tokenizer,
        seed=seed,
        device=device,
        max_steps=steps,
        **SAMSUM,
    )
    data = DatasetDict({"train": subset, "validation": samsum["validation"], "test": samsum["test"]})
    return CourseModel(model, data, {}, config)
