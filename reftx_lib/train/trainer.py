"""One training loop for both architectures.

``train(model, train_data, val_data, config)`` works for the encoder-decoder
(packed ``source [SEP] target`` rows) and the decoder-only model alike, because
both take ``forward(input_ids, labels=input_ids)`` and return a mean loss and
the number of supervised tokens. It returns a ``History`` for plotting.

What it guarantees: AdamW with linear warmup then cosine decay and gradient
clipping; bf16 autocast on CUDA and fp32 on CPU; batches built by token budget;
the same seed gives a bit-identical loss history on CPU; checkpoints are atomic
and a resumed run continues exactly where it stopped; a non-finite loss stops
the run with the step named, leaving the last good checkpoint in place. Under
``torchrun`` it trains data-parallel (DDP) with the same global batches.

Keeping a GPU busy: a training step queues its kernels and returns, so the host
can build the next batch while the device computes, unless something waits for
a device value. Here nothing does between log points: batches are padded,
checked and (encoder-decoder) split at SEP on the host (``training_inputs``),
copied from pinned memory without blocking, and the losses stay on the device
until every ``log_every`` steps, when one copy brings the whole window back.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..data.batching import pad_batch, token_budget_batches
from ..model.config import ModelConfig
from ..model.transformer import BaseLanguageModel
from .checkpoint import load_checkpoint, restore_weights, save_checkpoint, set_rng_state
from .device import peak_memory_mb, resolve_device
from .evaluation import evaluate_loss
from .step import autocast_for, training_step


@dataclass
class TrainConfig:
    """Everything that decides a training run; stored in every checkpoint."""

    max_steps: int = 1000  # the schedule's length
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    batch_tokens: int = 8192  # padded tokens per (global) batch
    eval_every: int = 100
    eval_batches: int | None = 20  # None evaluates the whole validation set
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str | None = None  # where last.pt (and best.pt) go; None keeps nothing on disk
    checkpoint_every: int | None = None  # default: at every evaluation
    keep_every: int | None = None  # also keep step-<N>.pt every N steps: a metric traced along training
    stop_after: int | None = None  # end early at this step (the schedule still follows max_steps)
    max_time_s: float | None = None  # end early after this much training time (equal-time comparisons)
    progress: bool = True
    # Steps between loss copies to the host (and max_time_s checks); None: 1 on CPU, 50 on CUDA.
    log_every: int | None = None
    compile: bool = False  # torch.compile the forward pass and loss
    tokenizer: dict = field(default_factory=dict)  # reference to the tokenizer (name, vocab size, path)
    data: str = ""  # what the model is trained on; ``fit`` reuses a checkpoint only if this matches
    overwrite: bool = False  # replace a checkpoint of another run in checkpoint_dir instead of refusing

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_tokens", "eval_every", "log_every", "keep_every"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be positive, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.warmup_steps > self.max_steps:
            raise ValueError(
                f"TrainConfig.warmup_steps must be in [0, max_steps={self.max_steps}], "
                f"got {self.warmup_steps}"
            )
        self.betas = tuple(self.betas)


# The TrainConfig fields that decide the weights a run produces. Paths, stopping rules (stop_after,
# max_time_s), evaluation and logging settings do not: a run may move, or continue past where it stopped.
OPTIMIZER_FIELDS = (
    "lr",
    "min_lr_ratio",
    "warmup_steps",
    "weight_decay",
    "betas",
    "grad_clip",
)  # AdamW + schedule
RUN_FIELDS = ("max_steps", *OPTIMIZER_FIELDS, "batch_tokens", "seed", "data", "tokenizer")


def run_identity(model_class: str, model_config: dict, train_config: dict) -> dict:
    """What makes two runs the same run: the model's class and config, and ``RUN_FIELDS``.

    A checkpoint is reused or resumed only by the run that wrote it, and never
    overwritten by another (``CheckpointMismatchError``).
    """
    identity = {
        "model_class": model_class,
        **{f"model.{k}": v for k, v in ModelConfig.from_dict(model_config).to_dict().items()},
    }
    for name in RUN_FIELDS:
        value = train_config.get(name)
        identity[name] = list(value) if isinstance(value, tuple) else value
    return identity


def identity_of(model: BaseLanguageModel, config: TrainConfig) -> dict:
    """``run_identity`` of training ``model`` with ``config``."""
    return run_identity(type(model).__name__, model.config.to_dict(), asdict(config))


def stored_identity(ckpt: dict) -> dict:
    """``run_identity`` of the run that wrote checkpoint ``ckpt``."""
    return run_identity(ckpt["model_class"], ckpt["model_config"], ckpt["train_config"])


class CheckpointMismatchError(ValueError):
    """A checkpoint belongs to another run than the one asked for."""


def check_same_run(path: Path, stored: dict, wanted: dict, action: str, fix: str) -> None:
    """Raise ``CheckpointMismatchError`` naming every setting in which the two runs differ."""
    diff = [
        f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} here"
        for k in sorted(stored.keys() | wanted.keys())
        if stored.get(k) != wanted.get(k)
    ]
    if diff:
        raise CheckpointMismatchError(
            f"{path} was written by another run ({'; '.join(diff)}), so it cannot be {action}. {fix}"
        )


def check_writable(folder: Path) -> None:
    """Fail before training, not at the first checkpoint, when ``folder`` cannot hold checkpoints."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise ValueError(
            f"cannot write checkpoints to {folder} ({exc.strerror or exc}); choose a writable "
            "folder (checkpoint_dir, command line: --out)"
        ) from None


class History(list):
    """Per-step records (dicts). ``to_frame()`` gives a pandas DataFrame for plotting."""

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(list(self))

    def evals(self) -> list[dict]:
        """Only the steps at which validation ran."""
        return [r for r in self if r["val_loss"] is not None]

    def best_val_loss(self) -> float:
        return min((r["val_loss"] for r in self.evals()), default=float("nan"))

    def curve(self) -> list[list[float]]:
        """The validation curve, ``[[step, val_loss], ...]``: what a results file stores per model."""
        return [[r["step"], r["val_loss"]] for r in self.evals()]

    def last_quarter_improvement(self) -> float:
        """How much the validation loss still fell over the last quarter of the run, relative:
        ``(L(q) - L(end)) / L(q)``, with ``L(q)`` the last evaluation at or before 3/4 of the steps.

        Below ``FLAT`` (2%) the curve has flattened: more steps of this schedule would change
        little. NaN when no evaluation lies in the first three quarters.
        """
        evals = self.evals()
        if not evals:
            return float("nan")
        end = evals[-1]
        before = [r for r in evals if r["step"] <= 0.75 * end["step"]]
        if not before:
            return float("nan")
        return (before[-1]["val_loss"] - end["val_loss"]) / before[-1]["val_loss"]

    def steady_step_seconds(self, skip: float = 0.1) -> float:
        """The median training time of one optimizer step after the first ``skip`` share of the steps:
        the run's own steady-state speed, which warm-up, a first-batch allocation or a short burst of
        other load on the machine cannot move much (a mean or a total would)."""
        times = [r["wall_time"] for r in self]
        steps = [b - a for a, b in zip(times, times[1:])][int(skip * len(times)) :]
        if not steps:
            raise ValueError(f"a history of {len(self)} steps has no steady state to time: train longer")
        return statistics.median(steps)

    def flattened(self) -> bool:
        """True when the last quarter improved the validation loss by less than ``FLAT``."""
        return self.last_quarter_improvement() < FLAT


FLAT = 0.02  # a curve whose last quarter improves the validation loss by less than 2% has flattened


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier on the base LR: linear warmup to 1, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python so CPU runs repeat bit for bit."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(
    model: torch.nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not biases, norms); fused kernels on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=device.type == "cuda")


def _rows(data) -> list[list[int]]:
    """Token rows from a datasets.Dataset (column ``input_ids``) or a plain list of lists."""
    rows = data["input_ids"] if not isinstance(data, list) else data
    if len(rows) == 0:
        raise ValueError("training/validation data is empty: check the preprocessing step and its filters")
    return rows


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass
class Position:
    """Where a run stands. A checkpoint stores it, so a resumed run continues exactly here."""

    step: int = 0
    epoch: int = 0
    batch_pos: int = 0  # index of the next batch in this epoch's order
    elapsed: float = 0.0  # training seconds so far (evaluation and saving are not counted)
    totals: dict = field(default_factory=lambda: {"tokens": 0, "supervised": 0, "padded": 0})


def _refuse_other_runs(
    model: BaseLanguageModel, config: TrainConfig, resume: str | Path | None, rank: int
) -> dict | None:
    """Check before the first step that nothing of another run is lost; returns the loaded ``resume``.

    Only the run that wrote a checkpoint may resume it, and a ``last.pt`` of another run in
    ``config.checkpoint_dir`` is never overwritten unless ``config.overwrite``.
    """
    wanted = identity_of(model, config)
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=resolve_device(config.device))
        check_same_run(
            Path(resume),
            stored_identity(ckpt),
            wanted,
            "resumed by this run",
            "Resume with the model, data and settings it was trained with, or start without --resume.",
        )
    if config.checkpoint_dir and rank == 0:
        folder = Path(config.checkpoint_dir)
        check_writable(folder)
        last = folder / "last.pt"
        if (
            last.is_file()
            and not config.overwrite
            and (resume is None or Path(resume).resolve() != last.resolve())
        ):
            check_same_run(
                last,
                stored_identity(load_checkpoint(last)),
                wanted,
                "overwritten",
                "Pass overwrite=True (command line: --overwrite) to replace it, or train into "
                "another folder (checkpoint_dir, command line: --out).",
            )
    return ckpt


class _Run:
    """One call of ``train``: the state its steps share, and the steps themselves.

    ``run()`` repeats: take the next batch (``_batch``), one optimizer step (``_step``), and at
    log, evaluation and checkpoint points bring the losses to the host (``_flush``), evaluate
    (``_evaluate``) and save (``_save``).
    """

    def __init__(
        self, model: BaseLanguageModel, train_data, val_data, config: TrainConfig, resume: str | Path | None
    ) -> None:
        self.device = resolve_device(config.device)
        self.rank, self.world = _world()
        ckpt = _refuse_other_runs(model, config, resume, self.rank)
        self.model, self.config = model, config
        self.ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
        seed_everything(config.seed)
        self.train_rows, self.val_rows = _rows(train_data), _rows(val_data)
        self.lengths = [len(r) for r in self.train_rows]
        model.to(self.device)
        ddp_model = model
        if self.world > 1:
            ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = make_optimizer(model, config, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_lambda(s, config.warmup_steps, config.max_steps, config.min_lr_ratio)
        )
        self.at, self.history = Position(), History()
        if ckpt is not None:
            restore_weights(model, ckpt)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.at = Position(
                ckpt["step"], ckpt["epoch"], ckpt["batch_pos"], ckpt["elapsed"], ckpt["totals"]
            )
            self.history = History(ckpt["history"])
            set_rng_state(ckpt["rng"])
        self.ckpt_every = config.checkpoint_every or config.eval_every
        self.end = min(config.max_steps, config.stop_after or config.max_steps)
        self.autocast = autocast_for(self.device)
        self.batches = self._epoch_order()
        self.bar = tqdm(
            total=self.end,
            initial=self.at.step,
            desc=type(model).__name__,
            disable=not config.progress or self.rank != 0,
            dynamic_ncols=True,
        )
        self.best_val = min(
            (r["val_loss"] for r in self.history if r["val_loss"] is not None), default=float("inf")
        )
        self.log_every = config.log_every or (50 if self.device.type == "cuda" else 1)
        self.forward_loss = _forward_loss(ddp_model, config.compile)
        self.window: list[
            tuple[dict, torch.Tensor, float]
        ] = []  # (record, loss on device, host s) since a sync
        self.window_start = 0.0  # when the window's first step began

    def run(self) -> History:
        """Train until ``max_steps`` (or ``stop_after``, or ``max_time_s``) and return the history."""
        config, at = self.config, self.at
        self.model.train()
        while at.step < self.end and (config.max_time_s is None or at.elapsed < config.max_time_s):
            record = self._step(self._batch())
            last = at.step == self.end
            evaluate = at.step % config.eval_every == 0 or last
            checkpoint = at.step % self.ckpt_every == 0 or last
            keep = config.keep_every is not None and at.step % config.keep_every == 0
            if len(self.window) >= self.log_every or evaluate or checkpoint or keep:
                self._flush()
                last = last or (config.max_time_s is not None and at.elapsed >= config.max_time_s)
                evaluate, checkpoint = evaluate or last, checkpoint or last
            if evaluate:
                self._evaluate(record)
            if checkpoint:
                self._save("last.pt")
            if keep:
                self._save(f"step-{at.step}.pt")
        self._flush()
        self.bar.close()
        self.model.eval()
        return self.history

    def _epoch_order(self) -> list[list[int]]:
        """This epoch's batches (row indices): token-budget batches, shuffled by seed and epoch."""
        seed = self.config.seed + self.at.epoch
        return token_budget_batches(self.lengths, self.config.batch_tokens, shuffle=True, seed=seed)

    def _batch(self) -> list[int]:
        """The next batch's row indices; a new epoch starts with a new order."""
        if self.at.batch_pos >= len(self.batches):
            self.at.epoch, self.at.batch_pos = self.at.epoch + 1, 0
            self.batches = self._epoch_order()
        return self.batches[self.at.batch_pos]

    def _step(self, index: list[int]) -> dict:
        """One optimizer step on the rows ``index``; returns its record (the loss stays on the device)."""
        model, at, rank, world = self.model, self.at, self.rank, self.world
        t0 = time.perf_counter()
        self.window_start = self.window_start if self.window else t0  # evaluation and saving are not counted
        full = pad_batch([self.train_rows[i] for i in index])  # (B, T): the global batch, on the host
        share = full[rank::world]  # this rank's rows; a rank left without rows runs row 0 at weight 0
        inputs = model.training_inputs(share if len(share) else full[:1])
        if self.device.type == "cuda":
            inputs = {k: v.pin_memory() for k, v in inputs.items()}
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        n_tokens, n_supervised = int((full != model.config.pad_token_id).sum()), model.counted_targets(full)

        # DDP averages gradients over ranks; weighting each rank's loss by its tokens gives the global mean.
        weight = (world / n_supervised if len(share) else 0.0) if world > 1 else None

        def loss_fn() -> torch.Tensor:
            loss, n_local = self.forward_loss(inputs)
            return loss if weight is None else loss * n_local * weight

        lr = self.scheduler.get_last_lr()[0]
        loss = training_step(
            model,
            loss_fn,
            self.optimizer,
            scheduler=self.scheduler,
            grad_clip=self.config.grad_clip,
            autocast=self.autocast,
        )
        at.step, at.batch_pos = at.step + 1, at.batch_pos + 1
        at.totals["tokens"] += n_tokens
        at.totals["supervised"] += n_supervised
        at.totals["padded"] += full.numel()
        dt = time.perf_counter() - t0  # host time; on CUDA the device may still be working
        record = {
            "step": at.step,
            "epoch": at.epoch,
            "train_loss": None,
            "val_loss": None,
            "val_ppl": None,
            "lr": lr,
            "tokens": at.totals["tokens"],
            "supervised_tokens": at.totals["supervised"],
            "padding_waste": 1 - at.totals["tokens"] / at.totals["padded"],
            "wall_time": None,
            "tokens_per_s": n_tokens / dt,
            "peak_mem_mb": peak_memory_mb(self.device),
        }
        self.window.append((record, (loss.detach() / world) if world > 1 else loss.detach(), dt))
        return record

    def _flush(self) -> None:
        """Bring the window's losses to the host in one copy; fail on the first non-finite one."""
        if not self.window:
            return
        losses = torch.stack([loss for _, loss, _ in self.window])  # (n,) on the device
        if self.world > 1:
            dist.all_reduce(losses)
        values = losses.tolist()  # the one host sync per window
        now = time.perf_counter()
        host = sum(dt for _, _, dt in self.window)
        scale = (now - self.window_start) / host if host > 0 else 1.0  # queued work finishes during the sync
        for (record, _, dt), value in zip(self.window, values):
            if not math.isfinite(value):
                self._fail(
                    f"non-finite training loss ({value}) at step {record['step']}",
                    "Lower the learning rate or check the data of this batch.",
                )
            self.at.elapsed += dt * scale
            record.update(
                train_loss=value, wall_time=self.at.elapsed, tokens_per_s=record["tokens_per_s"] / scale
            )
            self.history.append(record)
        self.bar.update(len(self.window))
        best = f"{self.best_val:.3f}" if self.best_val < float("inf") else "-"
        self.bar.set_postfix(loss=f"{values[-1]:.3f}", val=best)
        self.window.clear()

    def _evaluate(self, record: dict) -> None:
        """Validation loss into ``record``; a new best is saved as best.pt, a diverged run stops."""
        config = self.config
        val = evaluate_loss(
            self.model, self.val_rows, config.batch_tokens, self.device, max_batches=config.eval_batches
        )
        record["val_loss"], record["val_ppl"] = val["loss"], val["ppl"]
        if not math.isfinite(val["ppl"]):  # a NaN loss, or one too large for exp(): diverged
            self._fail(
                f"validation loss {val['loss']:.4g} at step {self.at.step}: the run has diverged "
                f"(perplexity {val['ppl']:.4g})",
                "Lower the learning rate or check the data.",
            )
        if val["loss"] < self.best_val:
            self.best_val = val["loss"]
            self._save("best.pt")

    def _save(self, name: str) -> None:
        """An atomic checkpoint holding everything ``train(resume=...)`` needs to continue exactly."""
        if self.ckpt_dir is None or self.rank != 0:
            return
        at = self.at
        save_checkpoint(
            self.ckpt_dir / name,
            self.model,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            step=at.step,
            epoch=at.epoch,
            batch_pos=at.batch_pos,
            elapsed=at.elapsed,
            totals=at.totals,
            history=list(self.history),
            train_config=asdict(self.config),
            tokenizer=self.config.tokenizer,
        )

    def _fail(self, what: str, fix: str) -> NoReturn:
        """Stop the run, naming the last good checkpoint: the one already on disk is left as it is."""
        self.bar.close()
        where = f"; the last good checkpoint is {self.ckpt_dir / 'last.pt'}" if self.ckpt_dir else ""
        raise FloatingPointError(f"{what}{where}. {fix}")


def train(
    model: BaseLanguageModel, train_data, val_data, config: TrainConfig, resume: str | Path | None = None
) -> History:
    """Train ``model`` in place and return its per-step history.

    ``train_data`` / ``val_data``: datasets with an ``input_ids`` column (or lists
    of token lists); every row is trained with ``labels = input_ids``.
    ``resume``: a checkpoint path; training continues from its step with its
    optimizer, scheduler, RNG and data position, so the result equals an
    uninterrupted run, and only the run that wrote it may resume it. A ``last.pt`` of another
    run in ``config.checkpoint_dir`` is never overwritten unless ``config.overwrite``.
    """
    return _Run(model, train_data, val_data, config, resume).run()


def fit(model: BaseLanguageModel, train_data, val_data, config: TrainConfig) -> History:
    """``train``, but reuse ``config.checkpoint_dir``: a finished run is loaded, a partial one resumed.

    Notebooks call this so that rerunning them (or a later notebook that needs
    the same model) never retrains what is already on disk. A checkpoint is reused
    only by the run that wrote it (``run_identity``): a moved folder, another
    ``stop_after`` or ``max_time_s`` is the same run, and continues where it stopped.
    A checkpoint of another run is refused (``CheckpointMismatchError``) unless
    ``config.overwrite``.
    """
    last = Path(config.checkpoint_dir) / "last.pt" if config.checkpoint_dir else None
    if last is not None and last.is_file() and not config.overwrite:
        ckpt = load_checkpoint(last)
        check_same_run(
            last,
            stored_identity(ckpt),
            identity_of(model, config),
            "reused by this run",
            "Pass overwrite=True (command line: --overwrite) to train this run over it, or "
            "train into another folder (checkpoint_dir, command line: --out).",
        )
        if ckpt["step"] >= min(config.max_steps, config.stop_after or config.max_steps):
            restore_weights(model, ckpt)
            model.to(resolve_device(config.device)).eval()
            return History(ckpt["history"])
        return train(model, train_data, val_data, config, resume=last)
    return train(model, train_data, val_data, config)


def _forward_loss(model: torch.nn.Module, compile: bool):
    """``inputs -> (loss, n_tokens)``; compiled if asked.

    Only the loss is asked for (``return_logits=False``): eagerly on a CPU the
    model then fuses its output head with the loss (``reftx_lib.model.loss``), and a
    compiled graph that returned the logits too would make its backward build a
    zero gradient as large as them (B, T, V).
    torch.compile's default shape handling suits both kinds of data: fixed-length
    blocks keep one static graph, and the first change of batch shape recompiles
    once into a graph for any shape.
    """

    def forward_loss(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(**inputs, check_ids=False, return_logits=False)
        return out["loss"], out["n_tokens"]

    return torch.compile(forward_loss) if compile else forward_loss


def init_distributed() -> tuple[int, int]:
    """Join the process group ``torchrun`` set up (gloo on CPU, nccl on GPU); returns (rank, world)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return _world()
