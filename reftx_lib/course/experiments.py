"""The few setup steps every experiment shares: data at a preset's size, a model by name, a train config.

Notebooks and the command line call these so that "the SAMSum baseline" or
"the raw-text midpoint split" means the same thing everywhere.
"""

from __future__ import annotations

from datasets import DatasetDict

from ..data.corpora import load_corpus
from ..data.preprocessing import encode_blocks, encode_documents, encode_midpoint, encode_samsum
from ..data.tokenizer import tokenizer_info
from ..model.transformer import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer
from ..paths import checkpoint_dir
from ..train.trainer import TrainConfig

MODEL_KINDS = {"encdec": ReferenceTransformer, "deconly": ReferenceDecoderOnly}
RAWTEXT_MODES = ("midpoint", "documents", "blocks")


def samsum_data(cfg: dict, tokenizer) -> tuple[DatasetDict, dict]:
    """SAMSum as packed ``dialogue [SEP] summary [EOS]`` rows, capped as the preset says."""
    return encode_samsum(
        load_corpus("samsum"),
        tokenizer,
        max_source_len=cfg["max_source_len"],
        max_target_len=cfg["max_target_len"],
    )


def rawtext_data(cfg: dict, tokenizer, mode: str) -> tuple[DatasetDict, dict]:
    """The textbooks corpus in one of three layouts, on the preset's document subset.

    ``midpoint``: the seed's ``first half [SEP] second half`` rows (encoder-decoder);
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
    encode = encode_midpoint if mode == "midpoint" else encode_documents
    return encode(ds, tokenizer, max_doc_tokens=cfg["max_doc_tokens"])


def build_model(kind: str, size: str, vocab_size: int, seed: int = 0, **overrides) -> BaseLanguageModel:
    """A freshly initialised model: ``kind`` is ``encdec`` or ``deconly``, ``size`` a MODEL_PRESETS name."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; allowed values: {list(MODEL_KINDS)}")
    import torch

    torch.manual_seed(seed)
    return MODEL_KINDS[kind].from_preset(size, vocab_size=vocab_size, **overrides)


def train_config(
    cfg: dict,
    *,
    name: str,
    preset: str,
    data: str,
    tokenizer,
    seed: int = 0,
    device: str = "auto",
    **overrides,
) -> TrainConfig:
    """A TrainConfig from a preset section, checkpointed under ``checkpoints/<preset>/<name>``."""
    steps = overrides.pop("max_steps", cfg.get("max_steps"))
    info = tokenizer_info(tokenizer)
    values = dict(
        max_steps=steps,
        lr=cfg.get("lr", 1e-3),
        warmup_steps=cfg.get("warmup_steps", max(1, steps // 10)),
        batch_tokens=cfg["batch_tokens"],
        eval_every=cfg.get("eval_every", max(1, steps // 5)),
        eval_batches=cfg.get("eval_batches"),
        seed=seed,
        device=device,
        checkpoint_dir=str(checkpoint_dir(preset, name)),
        data=data,
        tokenizer={"key": info["key"], "vocab_size": info["vocab_size"]},
    )
    return TrainConfig(**{**values, **overrides})


def pretrain_decoder_only(preset_name: str, preset: dict, tokenizer, device: str = "auto"):
    """Exp 2's decoder-only language model on textbook blocks; Exp 5 starts from the very same run.

    Both notebooks call this, so Exp 5 reuses Exp 2's checkpoint instead of training
    a second copy. Returns (model, history, data, stats).
    """
    from ..train.trainer import fit

    cfg = preset["rawtext"]
    data, stats = rawtext_data(cfg, tokenizer, "blocks")
    model = build_model(
        "deconly",
        cfg["model"],
        len(tokenizer),
        dropout=preset["samsum"]["dropout"],
        max_len=cfg["block_size"],
    )
    config = train_config(
        {**preset["samsum"], **cfg},
        name="exp2-deconly-blocks",
        preset=preset_name,
        data=f"textbooks-blocks-{cfg['block_size']}",
        tokenizer=tokenizer,
        device=device,
    )
    history = fit(model, data["train"], data["validation"], config)
    return model, history, data, stats


def samsum_baseline_model(preset_name: str, preset: dict, tokenizer, seed: int = 0, device: str = "auto"):
    """Notebook 01's SAMSum baseline encoder-decoder, trained once and reused (checkpoint
    ``samsum-baseline``).

    Later notebooks (Exp 3's attention study, ...) call this instead of repeating
    notebook 01's setup, so they load its checkpoint when it exists and otherwise
    train the very same run. Returns (model, history, data, stats).
    """
    from ..train.trainer import fit

    cfg = preset["samsum"]
    data, stats = samsum_data(cfg, tokenizer)
    model = build_model("encdec", cfg["model"], len(tokenizer), seed=seed, dropout=cfg["dropout"])
    config = train_config(
        cfg,
        name="samsum-baseline",
        preset=preset_name,
        data="samsum",
        tokenizer=tokenizer,
        seed=seed,
        device=device,
    )
    history = fit(model, data["train"], data["validation"], config)
    return model, history, data, stats


def rawtext_encdec_model(preset_name: str, preset: dict, tokenizer, seed: int = 0, device: str = "auto"):
    """Exp 1's encoder-decoder on raw text split at the midpoint (checkpoint ``exp1-encdec-midpoint``).

    Notebook 03's recipe: the SAMSum baseline's model size, dropout, lr, warmup and
    batch size, with the raw-text section's steps, evaluation and data. Exp 3 looks at
    its attention through this function, so a checkpoint either notebook made is
    reused by the other (``fit`` compares the configs). Returns (model, history, data, stats).
    """
    from ..train.trainer import fit

    samsum, cfg = preset["samsum"], preset["rawtext"]
    hp = {
        **cfg,
        "lr": samsum["lr"],
        "warmup_steps": samsum["warmup_steps"],
        "batch_tokens": samsum["batch_tokens"],
    }
    data, stats = rawtext_data(cfg, tokenizer, "midpoint")
    model = build_model("encdec", samsum["model"], len(tokenizer), seed=seed, dropout=samsum["dropout"])
    config = train_config(
        hp,
        name="exp1-encdec-midpoint",
        preset=preset_name,
        data=f"textbooks-midpoint-{cfg['max_doc_tokens']}",
        tokenizer=tokenizer,
        seed=seed,
        device=device,
    )
    history = fit(model, data["train"], data["validation"], config)
    return model, history, data, stats
