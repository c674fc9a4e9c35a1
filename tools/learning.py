"""Learning-parity benchmark: does a training step of ours teach as much as a step of the peer?

``tools.speed`` shows that a step of ours costs no more than a step of the
Hugging Face peer. That says nothing about what a step is worth: a model that
is fast but learns less per step gives worse answers for the same CPU time.
This benchmark trains each of our models and its peer with everything held
equal and compares their validation losses along the way:

- ``ReferenceDecoderOnly`` against ``GPT2LMHeadModel``, ``ReferenceTransformer``
  against ``MBartForConditionalGeneration`` (pre-LN, ``scale_embedding`` like ours),
  both at the same size (``tiny`` by default), with dropout 0.1;
- the same tokenizer, the same batches of ``batch_size`` rows in the same order,
  the same AdamW (weight decay on matrices only, as ``reftx_lib.train.trainer`` does),
  the same warm-up + cosine schedule and gradient clipping;
- on three corpora: the course's textbooks and SAMSum, and TinyStories. Raw text
  is cut into documents of at most ``max_doc_tokens``; the decoder-only models
  read ``[BOS] doc [EOS]``, the encoder-decoders the midpoint split
  ``first half [SEP] second half [EOS]``. On SAMSum the encoder-decoders read
  ``dialogue [SEP] summary [EOS]`` and the decoder-only models the same row as
  one text after ``[BOS]``;
- on ``copy``, reading isolated (issue 30): each source is a SAMSum dialogue's first 96 tokens and
  its target the first 24 of them again, so only a model that learns to read its source position
  by position drives the loss toward 0 (``python -m tools --learning --archs encoder-decoder
  --corpora copy --steps 1500 --eval-every 250 --warmup-steps 100 --seeds 0 1``);
- one validation loss for both sides: the token-weighted mean cross-entropy of
  each model's logits on exactly the same target tokens (``_target_nll``).

Each side trains through its ordinary training call (ours as
``reftx_lib.train.trainer`` calls it, the peers with ``labels=``). The controls
printed with it: the loss of an add-one-smoothed unigram model fitted on the
training targets (a model that ignores context scores this), and, with several
``--seeds``, how far two seeds of the same side lie apart (the noise a
difference must exceed). ``--ours-variant`` adds our model built with other
``ModelConfig`` values, for instance the initialization it had before
(``scale_embedding=True, position_scale=1.0``), so a lesson can show the difference the fix makes.

Run: ``python -m tools --learning --save cpu``. The result goes to
``results/bench/learning-<save>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from course.benchmarks import gap_verdict, load_stored, merge_stored, verdict_lines
from reftx_lib.constants import BOS_ID, IGNORE_INDEX, PAD_ID, SEP_ID
from reftx_lib.data.batching import pad_batch
from reftx_lib.model import packing
from reftx_lib.model.config import MODEL_SIZES
from reftx_lib.model.transformer import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.train.loss import training_loss
from reftx_lib.train.step import training_inputs
from tools.peers import copy_gpt2_into_ours

CORPORA = ("textbooks", "samsum", "tinystories", "copy")
COPY_SOURCE, COPY_TARGET = 96, 24  # the copy task: a dialogue's first 96 tokens, then its first 24 again
ARCHITECTURES = ("decoder-only", "encoder-decoder")
PEERS = {"decoder-only": "GPT2LMHeadModel", "encoder-decoder": "MBartForConditionalGeneration"}


@dataclass
class LearningSetup:
    """Everything both sides share. The defaults are the settings of issue #14 (tiny, 150 steps)."""

    size: str = "tiny"
    steps: int = 150
    warmup_steps: int = 20
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    dropout: float = 0.1
    batch_size: int = 16  # rows per step
    max_doc_tokens: int = 254  # raw-text documents are cut to this many tokens
    max_source_len: int = 254  # SAMSum dialogues
    max_target_len: int = 64  # SAMSum summaries, EOS included
    eval_every: int = 25
    n_val: int = 128  # validation rows, the same for every evaluation and both sides
    tolerance: float = 0.02  # nats our validation loss may lie above the peer's after warm-up
    seeds: list[int] = field(default_factory=lambda: [0])
    variant_seeds: int | None = None  # variants of ours train on the first this-many seeds; None: every seed
    # Ours (and its variants) start from the peer's initial draw wherever the two share a weight, so
    # the gap measures the models, not two random draws (decoder-only: every weight but GPT-2's wpe).
    peer_init: bool = False

    def __post_init__(self) -> None:
        if self.size not in MODEL_SIZES:
            raise ValueError(f"unknown size {self.size!r}; allowed values: {sorted(MODEL_SIZES)}")
        for name in ("steps", "batch_size", "max_doc_tokens", "eval_every", "n_val"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if self.variant_seeds is not None and not 1 <= self.variant_seeds <= len(self.seeds):
            raise ValueError(
                f"variant_seeds must be in [1, {len(self.seeds)}] (the number of seeds), "
                f"got {self.variant_seeds}"
            )
        self.betas = tuple(self.betas)

    def eval_steps(self) -> list[int]:
        """Steps at which both sides are evaluated: 0 (untrained), every ``eval_every``, and the last."""
        return sorted({0, self.steps, *range(self.eval_every, self.steps + 1, self.eval_every)})


# --------------------------------------------------------------------- data
def corpus_rows(
    corpus: str, arch: str, tokenizer, setup: LearningSetup
) -> tuple[list[list[int]], list[list[int]]]:
    """Training rows and the first ``n_val`` validation rows of ``corpus`` in ``arch``'s layout."""
    from datasets import DatasetDict

    from reftx_lib.data.corpora import load_corpus
    from reftx_lib.data.preprocessing import encode_documents, encode_midpoint, encode_samsum

    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; allowed values: {list(CORPORA)}")
    ds = load_corpus("samsum" if corpus == "copy" else corpus)
    ds = DatasetDict(train=ds["train"], validation=ds["validation"])
    if corpus == "copy":  # reading isolated: the target is the source's start, so copying drives loss to 0
        train, val = (copy_rows(list(ds[s]["dialogue"]), tokenizer, arch) for s in ("train", "validation"))
    elif corpus == "samsum":
        data, _ = encode_samsum(
            ds, tokenizer, max_source_len=setup.max_source_len, max_target_len=setup.max_target_len
        )
        wrap = (lambda row: [BOS_ID] + row) if arch == "decoder-only" else (lambda row: row)
        train, val = ([wrap(r) for r in data[s]["input_ids"]] for s in ("train", "validation"))
    else:
        encode = encode_documents if arch == "decoder-only" else encode_midpoint
        data, _ = encode(ds, tokenizer, max_doc_tokens=setup.max_doc_tokens)
        train, val = data["train"]["input_ids"], data["validation"]["input_ids"]
    if len(val) < setup.n_val:
        raise ValueError(
            f"{corpus}: only {len(val)} validation rows, fewer than n_val={setup.n_val}; lower --n-val"
        )
    return list(train), list(val[: setup.n_val])


def copy_rows(dialogues: list[str], tokenizer, arch: str) -> list[list[int]]:
    """``first 96 tokens [SEP] first 24 tokens`` of every dialogue that has 96 tokens: the target can be
    read off the source position by position, so only a model that reads its source learns it (the
    decoder-only side reads the row as one text after [BOS], as on SAMSum)."""
    from reftx_lib.data.preprocessing import tokenize

    rows = [d[:COPY_SOURCE] + [SEP_ID] + d[:COPY_TARGET] for d in tokenize(tokenizer, dialogues)]
    rows = [r for r in rows if len(r) == COPY_SOURCE + 1 + COPY_TARGET]
    return [[BOS_ID] + r for r in rows] if arch == "decoder-only" else rows


def batch_order(n_rows: int, setup: LearningSetup, seed: int) -> list[list[int]]:
    """Row indices of every training batch: shuffled epochs of ``batch_size`` rows, alike for both sides."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < setup.steps * setup.batch_size:
        epoch = list(range(n_rows))
        rng.shuffle(epoch)
        order += epoch
    return [order[i * setup.batch_size : (i + 1) * setup.batch_size] for i in range(setup.steps)]


def unigram_nll(train_targets: list[list[int]], val_targets: list[list[int]], vocab_size: int) -> float:
    """Mean NLL (nats) of an add-one-smoothed unigram model fitted on ``train_targets``.

    The control a context-free model reaches: a language model whose loss sits
    here has learned word frequencies and nothing else.
    """
    counts = Counter(t for row in train_targets for t in row)
    total = sum(counts.values()) + vocab_size
    val = [t for row in val_targets for t in row]
    return -sum(math.log((counts[t] + 1) / total) for t in val) / len(val)


# ------------------------------------------------------------------- sides
@dataclass
class Batch:
    """One padded batch in the tensors both sides read; ``targets`` line up with the logits.

    Decoder-only: ``ids`` (B, T), targets (B, T) = next token, -100 where none.
    Encoder-decoder: ``src`` (B, S), ``dec_in`` (B, T) = [BOS] + target[:-1], targets (B, T).
    """

    ids: torch.Tensor
    targets: torch.Tensor
    src: torch.Tensor | None = None
    dec_in: torch.Tensor | None = None


def make_batch(rows: list[list[int]], arch: str) -> Batch:
    """Pad ``rows`` and, for the encoder-decoder, split them at SEP the way our model does."""
    ids = pad_batch(rows)  # (B, L)
    if arch == "decoder-only":
        targets = F.pad(ids[:, 1:], (0, 1), value=PAD_ID)  # (B, T): logits at t predict ids at t+1
        return Batch(ids, targets.masked_fill(targets == PAD_ID, IGNORE_INDEX))
    src, tgt, _ = packing.split_packed(ids, SEP_ID, PAD_ID)  # (B, S), (B, T)
    return Batch(ids, tgt.masked_fill(tgt == PAD_ID, IGNORE_INDEX), src, packing.shift_right(tgt, BOS_ID))


@dataclass
class Side:
    """One model with its ordinary training call and its logits on a batch."""

    name: str
    model: nn.Module
    train_loss: Callable[[Batch], torch.Tensor]
    logits: Callable[[Batch], torch.Tensor]  # (B, T, V), aligned with batch.targets


def ours(
    arch: str, setup: LearningSetup, vocab_size: int, max_len: int, name: str = "ours", **overrides
) -> Side:
    """Our model for ``arch``, trained as ``reftx_lib.train.trainer`` trains it (fused head + loss on CPU)."""
    cls = ReferenceDecoderOnly if arch == "decoder-only" else ReferenceTransformer
    model: BaseLanguageModel = cls.from_size(
        setup.size, vocab_size=vocab_size, dropout=setup.dropout, max_len=max_len, **overrides
    )
    if arch == "decoder-only":
        return Side(
            name,
            model,
            lambda b: training_loss(model, {"input_ids": b.ids, "labels": b.ids})["loss"],
            lambda b: model(b.ids)["logits"],
        )
    return Side(
        name,
        model,
        lambda b: training_loss(model, training_inputs(model, b.ids))["loss"],
        lambda b: model(src_ids=b.src, tgt_ids=b.targets.clamp(min=0))["logits"],
    )


def peer(arch: str, setup: LearningSetup, vocab_size: int, max_len: int) -> Side:
    """The Hugging Face peer for ``arch`` (see ``tools.peers``), with our dropout on every path."""
    from tools.peers import peer_gpt2, peer_mbart

    if arch == "decoder-only":
        model = peer_gpt2(setup.size, max_len, vocab_size=vocab_size, dropout=setup.dropout)
        return Side(
            PEERS[arch],
            model,
            lambda b: (
                model(
                    input_ids=b.ids,
                    attention_mask=b.ids != PAD_ID,
                    labels=b.ids.masked_fill(b.ids == PAD_ID, IGNORE_INDEX),
                ).loss
            ),
            lambda b: model(input_ids=b.ids, attention_mask=b.ids != PAD_ID).logits,
        )
    model = peer_mbart(setup.size, max_len, vocab_size=vocab_size, dropout=setup.dropout)

    def forward(b: Batch, **labels):
        return model(input_ids=b.src, attention_mask=b.src != PAD_ID, decoder_input_ids=b.dec_in, **labels)

    return Side(PEERS[arch], model, lambda b: forward(b, labels=b.targets).loss, lambda b: forward(b).logits)


# --------------------------------------------------------------- training
def _target_nll(side: Side, batches: list[Batch]) -> float:
    """Token-weighted mean cross-entropy (nats) of ``side`` on the targets of ``batches``, in eval mode."""
    side.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logits = side.logits(b)  # (B, T, V)
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.size(-1)),
                    b.targets.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
            )
            count += int((b.targets != IGNORE_INDEX).sum())
    side.model.train()
    return total / count


def train_side(
    side: Side,
    train_batches: list[Batch],
    val_batches: list[Batch],
    setup: LearningSetup,
    seed: int,
    progress: bool = True,
) -> dict:
    """Train ``side`` on ``train_batches`` in order; return its validation curve and training time.

    The optimizer and schedule are the trainer's own (``make_optimizer``, ``lr_lambda``),
    so the peer trains exactly as a course model would.
    """
    from tqdm.auto import tqdm

    from reftx_lib.train.checkpoint import OPTIMIZER_FIELDS
    from reftx_lib.train.step import training_step
    from reftx_lib.train.trainer import TrainConfig, lr_lambda, make_optimizer

    config = TrainConfig(max_steps=setup.steps, **{name: getattr(setup, name) for name in OPTIMIZER_FIELDS})
    optimizer = make_optimizer(side.model, config, torch.device("cpu"))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, setup.warmup_steps, setup.steps, setup.min_lr_ratio)
    )
    evals = set(setup.eval_steps())
    curve = [[0, _target_nll(side, val_batches)]]
    torch.manual_seed(seed + 1)  # dropout masks
    side.model.train()
    seconds = 0.0
    for step, batch in enumerate(tqdm(train_batches, desc=side.name, disable=not progress, leave=False), 1):
        start = time.perf_counter()
        loss = training_step(
            side.model,
            lambda b=batch: side.train_loss(b),
            optimizer,
            scheduler=schedule,
            grad_clip=setup.grad_clip,
        )
        seconds += time.perf_counter() - start
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{side.name}: training loss {loss.item()} at step {step}")
        if step in evals:
            curve.append([step, _target_nll(side, val_batches)])
    return {"curve": [[s, round(v, 5)] for s, v in curve], "train_seconds": round(seconds, 2)}


def compare(
    corpus: str,
    arch: str,
    tokenizer,
    setup: LearningSetup,
    variants: dict[str, dict] | None = None,
    progress: bool = True,
) -> dict:
    """Train ours, the peer and any ``variants`` of ours on one corpus, for every seed; one result row.

    ``variants`` maps a name to ``ModelConfig`` overrides of our model (e.g. the
    initialization before a fix). The row holds every curve, the unigram control,
    the per-step difference ours - peer (mean over seeds) and the seed spread.
    """
    if setup.peer_init and arch != "decoder-only":
        raise ValueError(
            "peer_init copies GPT-2's initial weights into ours; there is no such map for "
            f"{PEERS[arch]}: run it with --archs decoder-only"
        )
    train_rows, val_rows = corpus_rows(corpus, arch, tokenizer, setup)
    max_len = max(len(r) for r in train_rows + val_rows) + 1
    vocab = len(tokenizer)
    val_batches = [make_batch(val_rows[i : i + 32], arch) for i in range(0, len(val_rows), 32)]

    def targets(rows: list[list[int]]) -> list[list[int]]:  # the tokens each row's loss counts
        return [r[1:] if arch == "decoder-only" else r[r.index(SEP_ID) + 1 :] for r in rows]

    builders: dict[str, Callable[[], Side]] = {
        "ours": lambda: ours(arch, setup, vocab, max_len),
        "peer": lambda: peer(arch, setup, vocab, max_len),
    }
    for name, overrides in (variants or {}).items():
        builders[name] = lambda o=overrides, n=name: ours(arch, setup, vocab, max_len, name=n, **o)
    runs: dict[str, dict[str, dict]] = {name: {} for name in builders}
    for k, seed in enumerate(setup.seeds):
        train_batches = [
            make_batch([train_rows[i] for i in index], arch)
            for index in batch_order(len(train_rows), setup, seed)
        ]
        draw = None  # with peer_init: the very initial weights the peer of this seed starts from
        if setup.peer_init:
            torch.manual_seed(seed)
            draw = builders["peer"]().model
        for name, build in builders.items():
            if name not in ("ours", "peer") and setup.variant_seeds is not None and k >= setup.variant_seeds:
                continue  # a variant shows a large effect: fewer seeds suffice
            torch.manual_seed(seed)
            side = build()
            if draw is not None and name != "peer":
                copy_gpt2_into_ours(draw, side.model)
            runs[name][str(seed)] = train_side(side, train_batches, val_batches, setup, seed, progress)
    steps = setup.eval_steps()

    def mean_curve(name: str) -> list[float]:
        return [
            sum(r["curve"][i][1] for r in runs[name].values()) / len(runs[name]) for i in range(len(steps))
        ]

    ours_mean, peer_mean = mean_curve("ours"), mean_curve("peer")
    spread = (
        {
            name: max(
                (
                    max(r["curve"][i][1] for r in per_seed.values())
                    - min(r["curve"][i][1] for r in per_seed.values())
                    for i, s in enumerate(steps)
                    if s > setup.warmup_steps
                ),
                default=0.0,
            )
            for name, per_seed in runs.items()
            if len(per_seed) > 1
        }
        if len(setup.seeds) > 1
        else None
    )
    row = {
        "corpus": corpus,
        "arch": arch,
        "model": "ReferenceDecoderOnly" if arch == "decoder-only" else "ReferenceTransformer",
        "peer_model": PEERS[arch],
        "train_rows": len(train_rows),
        "val_rows": len(val_rows),
        "val_tokens": sum(int((b.targets != IGNORE_INDEX).sum()) for b in val_batches),
        "unigram_loss": round(unigram_nll(targets(train_rows), targets(val_rows), vocab), 4),
        "steps": steps,
        "ours": [round(v, 4) for v in ours_mean],
        "peer": [round(v, 4) for v in peer_mean],
        "diff": [round(o - p, 4) for o, p in zip(ours_mean, peer_mean)],
        "seed_spread": spread,
        "variants": {
            name: [round(v, 4) for v in mean_curve(name)] for name in builders if name not in ("ours", "peer")
        },
        "runs": runs,
    }
    verdict = gap_verdict(row, setup.tolerance, setup.warmup_steps)
    return {
        **row,
        "max_diff_after_warmup": round(verdict["gap"], 4),
        "gap_status": verdict["status"],
        "within_tolerance": verdict["status"] == "within",
    }


def format_rows(rows: list[dict], setup: LearningSetup) -> str:
    """A text table per row: validation loss of both sides at each evaluation, their difference,
    and the controls."""
    lines = []
    for r in rows:
        lines.append(
            f"{r['arch']} on {r['corpus']}: {r['model']} vs {r['peer_model']} "
            f"({r['val_tokens']:,} validation tokens; unigram {r['unigram_loss']:.3f})"
        )
        names = ["ours", "peer", *r["variants"]]
        curves = {"ours": r["ours"], "peer": r["peer"], **r["variants"]}
        widths = [max(14, len(n) + 2) for n in names]
        lines.append(
            "  step " + "".join(f"{n:>{w}s}" for n, w in zip(names, widths)) + f"{'ours - peer':>14s}"
        )
        for i, step in enumerate(r["steps"]):
            lines.append(
                f"  {step:4d} "
                + "".join(f"{curves[n][i]:{w}.3f}" for n, w in zip(names, widths))
                + f"{r['diff'][i]:+14.3f}"
            )
        spread = (
            ""
            if r["seed_spread"] is None
            else (
                "; seed spread after warm-up: "
                + ", ".join(f"{n} {v:.3f}" for n, v in r["seed_spread"].items())
            )
        )
        lines.append(f"  {gap_verdict(r, setup.tolerance, setup.warmup_steps)['text']}{spread}")
    lines.append(
        f"validation loss in nats (mean over seeds {setup.seeds}); size {setup.size}, {setup.steps} steps of "
        f"{setup.batch_size} rows, lr {setup.lr}, warm-up {setup.warmup_steps}, dropout {setup.dropout}"
    )
    return "\n".join(lines)


def show(name: str) -> int:
    """Print the stored runs ``learning-<name>*.json`` as one table with their verdicts and provenance."""
    stored = load_stored(name)
    if not stored:
        print(f"no stored run results/bench/learning-{name}*.json: run with --save {name}", file=sys.stderr)
        return 1
    metrics = merge_stored(stored)
    fields = {f.name for f in dataclasses.fields(LearningSetup)}
    setup = LearningSetup(**{k: v for k, v in metrics["setup"].items() if k in fields})
    for run in stored:
        p = run["provenance"]
        measured = ", ".join(f"{r['arch']} on {r['corpus']}" for r in run["metrics"]["rows"])
        minutes = p["wall_time_s"] / 60
        print(f"stored: {p['date']}, commit {p['commit']}, {p['device']}, {minutes:.0f} min: {measured}")
    print(format_rows(metrics["rows"], setup).rsplit("\n", 1)[0])
    print("\n".join(["verdicts:", *(f"- {line}" for line in verdict_lines(metrics))]))
    return (
        0
        if all(
            gap_verdict(r, setup.tolerance, setup.warmup_steps)["status"] == "within" for r in metrics["rows"]
        )
        else 1
    )


def _compare_job(task: tuple) -> dict:
    """One ``compare`` call with its own thread count: a ``--jobs`` worker runs in a fresh process."""
    corpus, arch, setup, variants, threads, progress = task
    if threads:
        torch.set_num_threads(threads)
    from reftx_lib.data.tokenizer import load_tokenizer

    return compare(corpus, arch, load_tokenizer(8192), setup, variants, progress)


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> (name, ModelConfig overrides); values are read as JSON."""
    name, _, spec = text.partition(":")
    if not name or not spec:
        raise argparse.ArgumentTypeError(
            f"--ours-variant {text!r}: write NAME:KEY=VALUE[,KEY=VALUE], "
            "e.g. 2017-embedding:scale_embedding=true,position_scale=1.0"
        )
    overrides = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq:
            raise argparse.ArgumentTypeError(f"--ours-variant {text!r}: {item!r} is not KEY=VALUE")
        overrides[key] = json.loads(value)
    return name, overrides


def main(argv: list[str] | None = None) -> int:
    """``python -m tools --learning``: run, print, optionally save; 1 if a row misses the target."""
    p = argparse.ArgumentParser(prog="python -m tools --learning", description=__doc__.split("\n")[0])
    defaults = LearningSetup()
    p.add_argument("--archs", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    p.add_argument("--corpora", nargs="+", choices=CORPORA, default=list(CORPORA))
    flags = ("size", "steps", "warmup_steps", "batch_size", "eval_every", "n_val", "max_doc_tokens")
    for name in flags:
        value = getattr(defaults, name)
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(value),
            default=value,
            choices=sorted(MODEL_SIZES) if name == "size" else None,
        )
    p.add_argument("--seeds", nargs="+", type=int, default=defaults.seeds)
    p.add_argument(
        "--variant-seeds",
        type=int,
        help="train the --ours-variant models on the first N seeds only (default: every seed)",
    )
    p.add_argument(
        "--ours-variant",
        action="append",
        type=parse_variant,
        default=[],
        help="also train ours with ModelConfig overrides, NAME:KEY=VALUE[,KEY=VALUE]",
    )
    p.add_argument(
        "--peer-init",
        action="store_true",
        help="decoder-only: ours starts from GPT-2's initial weights (all but its position table), so "
        "the gap measures the models, not two random draws",
    )
    p.add_argument("--threads", type=int, help="CPU threads for torch in each job (default: torch's choice)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="(architecture, corpus) rows trained at once in separate processes; on a small CPU "
        "two jobs of one thread each finish sooner than one job of two threads",
    )
    p.add_argument("--save", metavar="NAME", help="store the rows in results/bench/learning-<NAME>.json")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--show",
        metavar="NAME",
        help="train nothing: print the stored runs learning-<NAME>*.json as one table, with verdicts",
    )
    args = p.parse_args(argv)
    if args.show:
        return show(args.show)
    try:
        setup = LearningSetup(
            **{name: getattr(args, name) for name in flags},
            max_source_len=args.max_doc_tokens,
            seeds=args.seeds,
            variant_seeds=args.variant_seeds,
            peer_init=args.peer_init,
        )
    except ValueError as exc:
        p.error(str(exc))
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    from course.results import provenance, save_results

    started = time.perf_counter()
    config = {**vars(args), "setup": asdict(setup), "threads": args.threads or torch.get_num_threads()}
    prov = provenance(args.save or "", torch.device("cpu"), config, 0.0)  # the commit that runs, taken now
    tasks = [
        (corpus, arch, setup, dict(args.ours_variant), args.threads, not args.no_progress and args.jobs == 1)
        for arch in args.archs
        for corpus in args.corpora
    ]
    rows = []
    if args.jobs == 1:
        results = map(_compare_job, tasks)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_compare_job, tasks)
    for row in results:  # in task order, printed and stored as each finishes: a stopped run keeps its rows
        rows.append(row)
        print(format_rows([row], setup).rsplit("\n", 1)[0], flush=True)
        if args.save:
            metrics = {
                "rows": rows,
                "setup": asdict(setup),
                "n_rows": len(rows),
                "n_rows_planned": len(tasks),
                "max_diff_after_warmup": max(r["max_diff_after_warmup"] for r in rows),
                "rows_within_tolerance": sum(r["within_tolerance"] for r in rows),
            }
            prov["wall_time_s"] = round(time.perf_counter() - started, 1)
            path = save_results("bench", f"learning-{args.save}", metrics, prov)
    print(format_rows(rows, setup).rsplit("\n", 1)[1])
    if args.save:
        print(f"saved {path}", file=sys.stderr)
    return 0 if all(r["within_tolerance"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
