"""One training loop for both architectures: AdamW, warmup then cosine decay, bf16 on CUDA, token-budget
batches, validation and an atomic checkpoint every ``eval_every`` steps, DDP under ``torchrun``. A seed
repeats a CPU run bit for bit, a resumed run continues exactly, and a GPU never waits for the host."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist
from tqdm.auto import tqdm
from transformers import set_seed as seed_everything  # python, numpy, torch: a CPU run repeats bit for bit

from ..data.batching import pad_batch, token_budget_batches
from ..model.transformer import BaseLanguageModel
from . import checkpoint as ck
from .device import peak_memory_mb, resolve_device
from .evaluation import evaluate_loss
from .loss import training_loss
from .step import autocast_for, counted_targets, training_inputs, training_step


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
    pad_apart: bool = False  # an encoder-decoder's batches costed and bucketed by source and target apart
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
    log_every: int | None = None  # steps per host sync (losses, max_time_s); None: 10 CPU, 50 GPU
    compile: bool = False  # torch.compile the forward pass and loss
    tokenizer: dict = field(default_factory=dict)  # reference to the tokenizer (name, vocab size, path)
    data: str = ""  # what the model is trained on; ``fit`` reuses a checkpoint only if this matches
    overwrite: bool = False  # replace a checkpoint of another run in checkpoint_dir instead of refusing

    def __post_init__(self) -> None:
        counts = ("max_steps", "batch_tokens", "eval_every", "eval_batches", "checkpoint_every", "keep_every")
        for name in ("lr", *counts, "stop_after", "log_every"):  # 0 would not mean "none": None does
            value = getattr(self, name)
            if value is not None and not 0 < value < 3e38:  # lr: the fused optimizer holds it in float32
                raise ValueError(f"TrainConfig.{name} must be positive (and below 3e38), got {value}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            bounds = f"[0, max_steps={self.max_steps}]"
            raise ValueError(f"TrainConfig.warmup_steps must be in {bounds}, got {self.warmup_steps}")
        self.betas = tuple(self.betas)


class History(list):
    """Per-step records (dicts), oldest first: ``pandas.DataFrame(history)`` is a table to plot."""

    def evals(self) -> list[dict]:
        """Only the steps at which validation ran."""
        return [r for r in self if r["val_loss"] is not None]

    def best_val_loss(self) -> float:
        """The lowest validation loss of the run; NaN before its first evaluation."""
        return min((r["val_loss"] for r in self.evals()), default=float("nan"))


def lr_lambda(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier on the base LR: linear warmup to 1, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, weight decay on matrices only (not biases, norms); fused: one pass over all its tensors."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=device.type in ("cpu", "cuda"))


def init_distributed() -> tuple[int, int]:
    """(rank, world size), joining ``torchrun``'s process group once; (0, 1) alone: one loop serves both."""
    if not dist.is_available():
        return 0, 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def train(
    model: BaseLanguageModel, train_data, val_data, config: TrainConfig, resume: str | Path | None = None
) -> History:
    """Train ``model`` in place on ``input_ids`` rows; ``resume`` continues this run's checkpoint exactly."""
    folder = config.checkpoint_dir if init_distributed()[0] == 0 else None  # rank 0 writes checkpoints
    with ck.writer_lock(Path(folder)) if folder else contextlib.nullcontext():
        run = _Run(model, train_data, val_data, config, resume)  # device, optimizer, schedule, data, position
        at, end = run.at, run.end
        checkpoint_every = config.checkpoint_every or config.eval_every
        model.train()
        while at.step < end and (config.max_time_s is None or at.elapsed < config.max_time_s):
            record = run.step(run.next_batch())
            last, evaluate = at.step == end, at.step % config.eval_every == 0
            save = at.step % checkpoint_every == 0
            keep = config.keep_every is not None and at.step % config.keep_every == 0
            if len(run.window) >= run.log_every or last or evaluate or save or keep:
                run.flush()  # the losses to the host; training time is known (max_time_s) only now
                last = last or (config.max_time_s is not None and at.elapsed >= config.max_time_s)
            if evaluate or last:
                run.evaluate(record)
            if save or last:
                run.save("last.pt")
            if keep:
                run.save(f"step-{at.step}.pt")
        run.flush()
        run.bar.close()
    model.eval()
    return run.history


def fit(model: BaseLanguageModel, train_data, val_data, config: TrainConfig) -> History:
    """``train``, but loading or resuming this run's checkpoint: a rerun notebook never retrains it."""
    last = Path(config.checkpoint_dir) / "last.pt" if config.checkpoint_dir else None
    if last is None or not last.is_file() or config.overwrite:
        return train(model, train_data, val_data, config)
    ckpt = ck.check_same_run(last, ck.identity_of(model, config), "reused by this run", _FIX_FOLDER)
    if ckpt["step"] < min(config.max_steps, config.stop_after or config.max_steps):
        return train(model, train_data, val_data, config, resume=last)
    ck.restore_weights(model, ckpt)
    model.to(resolve_device(config.device)).eval()
    return History(ckpt["history"])


_FIX_FOLDER = "Pass overwrite=True (--overwrite) to replace it, or another checkpoint_dir (--out)."


def _rows(data) -> list[list[int]]:
    """Token rows from a datasets.Dataset (column ``input_ids``) or a plain list of lists."""
    rows = data["input_ids"] if not isinstance(data, list) else data
    if len(rows) == 0:
        raise ValueError("training/validation data is empty: check the preprocessing step and its filters")
    return rows


def _refuse_other_runs(model, config: TrainConfig, resume: str | Path | None, rank: int) -> dict | None:
    """Check before the first step that nothing of another run is lost; returns the checkpoint ``resume``."""
    wanted = ck.identity_of(model, config)
    fix = "Resume with the model, data and settings it was trained with, or start without --resume."
    ckpt = None if resume is None else ck.check_same_run(Path(resume), wanted, "resumed by this run", fix)
    if config.checkpoint_dir and rank == 0:
        folder = Path(config.checkpoint_dir)
        resuming_it = resume is not None and Path(resume).resolve() == (folder / "last.pt").resolve()
        if (folder / "last.pt").is_file() and not config.overwrite and not resuming_it:
            ck.check_same_run(folder / "last.pt", wanted, "overwritten", _FIX_FOLDER)
        if config.overwrite and resume is None:  # the old run goes whole: no analysis mixes two runs
            for old in [p for pattern in ("last.*", "best.*", "step-*") for p in folder.glob(pattern)]:
                old.unlink()
    return ckpt


@dataclass
class Position:
    """Where a run stands. A checkpoint stores it, so a resumed run continues exactly here."""

    step: int = 0
    epoch: int = 0
    batch_pos: int = 0  # index of the next batch in this epoch's order
    elapsed: float = 0.0  # training seconds so far (evaluation and saving are not counted)
    totals: dict = field(default_factory=lambda: dict(tokens=0, supervised=0, padded=0, fed=0))


class _Run:
    """What one ``train`` call's steps share, and the window of steps whose losses are still on the device."""

    def __init__(self, model, train_data, val_data, config: TrainConfig, resume: str | Path | None) -> None:
        self.device = resolve_device(config.device)
        self.rank, self.world = init_distributed()
        ckpt = _refuse_other_runs(model, config, resume, self.rank)
        self.model, self.config = model, config
        seed_everything(config.seed)
        self.train_rows, self.val_rows = _rows(train_data), _rows(val_data)
        model.to(self.device)
        self.optimizer = make_optimizer(model, config, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_lambda(s, config.warmup_steps, config.max_steps, config.min_lr_ratio)
        )
        self.at, self.history, self.saved = Position(), History(), resume  # saved: the newest good checkpoint
        if ckpt is not None:  # continue exactly: weights, optimizer, schedule, data position, RNG
            ck.restore_weights(model, ckpt)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.at = Position(**{f.name: ckpt[f.name] for f in fields(Position)})
            self.history = History(ckpt["history"])
            ck.set_rng_state(ckpt["rng"])
        self.batches = self._epoch_order()
        self.best_val = min((r["val_loss"] for r in self.history.evals()), default=math.inf)
        if self.world > 1:  # DDP averages the gradients of the ranks after each backward pass
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.forward_loss = _forward_loss(model, config.compile)
        self.autocast = autocast_for(self.device)
        self.log_every = config.log_every or (50 if self.device.type == "cuda" else 10)
        self.window: list[tuple[dict, torch.Tensor, float]] = []  # (record, loss on device, host seconds)
        self.window_start = 0.0  # when the window's first step began
        self.end = min(config.max_steps, config.stop_after or config.max_steps)
        name, hidden = type(self.model).__name__, not config.progress or self.rank != 0
        self.bar = tqdm(total=self.end, initial=self.at.step, desc=name, disable=hidden, dynamic_ncols=True)

    def _epoch_order(self) -> list[list[int]]:
        seed, sep = self.config.seed + self.at.epoch, self.model.config.sep_token_id
        split = self.model.is_encoder_decoder and self.config.pad_apart
        lengths = [(r.index(sep), len(r) - r.index(sep) - 1) if split else len(r) for r in self.train_rows]
        return token_budget_batches(lengths, self.config.batch_tokens, shuffle=True, seed=seed)

    def next_batch(self) -> list[int]:
        if self.at.batch_pos >= len(self.batches):
            self.at.epoch, self.at.batch_pos = self.at.epoch + 1, 0
            self.batches = self._epoch_order()
        return self.batches[self.at.batch_pos]

    def step(self, index: list[int]) -> dict:
        """One optimizer step on the rows ``index``; returns its record (the loss stays on the device)."""
        model, at, rank, world = self.model, self.at, self.rank, self.world
        pad = model.config.pad_token_id
        t0 = time.perf_counter()
        self.window_start = self.window_start if self.window else t0  # evaluation and saving are not counted
        full = pad_batch([self.train_rows[i] for i in index])  # (B, T): the global batch, on the host
        share = full[rank::world]  # this rank's rows; a rank left without rows runs row 0 at weight 0
        inputs = training_inputs(model, share if len(share) else full[:1])
        fed = [v for k, v in inputs.items() if k != "labels"]  # what the model computes, on the host
        padded = sum(v.numel() for v in fed) * world
        real = sum(int((v != pad).sum()) for v in fed) * world
        pin, dev = self.device.type == "cuda", self.device  # pinned memory: the copy does not block
        inputs = {k: (v.pin_memory() if pin else v).to(dev, non_blocking=True) for k, v in inputs.items()}
        n_tokens, n_supervised = int((full != pad).sum()), counted_targets(model, full)
        # DDP averages gradients over ranks; weighting each rank's loss by its tokens gives the global mean.
        weight = (world / n_supervised if len(share) else 0.0) if world > 1 else None

        def loss_fn() -> torch.Tensor:  # () the batch's mean loss per supervised token
            loss, n_local = self.forward_loss(inputs)
            return loss if weight is None else loss * n_local * weight

        sched, clip, amp = self.scheduler, self.config.grad_clip, self.autocast
        lr = sched.get_last_lr()[0]  # this step's rate: the scheduler moves on inside training_step
        loss = training_step(model, loss_fn, self.optimizer, scheduler=sched, grad_clip=clip, autocast=amp)
        at.step, at.batch_pos = at.step + 1, at.batch_pos + 1
        for key, n in zip(at.totals, (n_tokens, n_supervised, padded, real)):
            at.totals[key] += n
        dt = time.perf_counter() - t0  # host time; on CUDA the device may still be working
        # flush fills in train_loss and wall_time, evaluate val_loss and val_ppl
        record = dict(step=at.step, epoch=at.epoch, train_loss=None, val_loss=None, val_ppl=None, lr=lr)
        record.update(tokens=at.totals["tokens"], supervised_tokens=at.totals["supervised"])
        record.update(padding_waste=1 - at.totals["fed"] / at.totals["padded"], wall_time=None)
        record.update(tokens_per_s=n_tokens / dt, peak_mem_mb=peak_memory_mb(self.device))
        self.window.append((record, (loss.detach() / world) if world > 1 else loss.detach(), dt))
        return record

    def flush(self) -> None:
        """The window's losses to the host in one copy (a GPU runs ahead until then): check, time, log."""
        if not self.window:
            return
        losses = torch.stack([loss for _, loss, _ in self.window])  # (n,) on the device
        if self.world > 1:
            dist.all_reduce(losses)
        values = losses.tolist()  # the one host sync per window
        host = sum(dt for _, _, dt in self.window)
        # The device finishes the queued work during the sync: spread the window's wall time over its steps.
        scale = (time.perf_counter() - self.window_start) / host if host > 0 else 1.0
        for (record, _, dt), value in zip(self.window, values):
            if not math.isfinite(value):
                what = f"non-finite training loss ({value}) at step {record['step']}"
                self._fail(what, "Lower the learning rate or check the data of this batch.")
            self.at.elapsed += dt * scale
            record.update(train_loss=value, wall_time=self.at.elapsed)
            record["tokens_per_s"] /= scale
            self.history.append(record)
        self.bar.update(len(self.window))
        best = f"{self.best_val:.3f}" if self.best_val < math.inf else "-"
        tok_s, lr = f"{record['tokens_per_s']:.0f}", f"{record['lr']:.2e}"
        self.bar.set_postfix(loss=f"{values[-1]:.3f}", val=best, tok_s=tok_s, lr=lr)
        self.window.clear()

    def evaluate(self, record: dict) -> None:
        """Validation loss into ``record``; a new best is saved as best.pt, a diverged run stops."""
        config = self.config
        val = evaluate_loss(self.model, self.val_rows, config.batch_tokens, self.device, config.eval_batches)
        record["val_loss"], record["val_ppl"] = val["loss"], val["ppl"]
        if not math.isfinite(val["ppl"]):  # a NaN loss, or one too large for exp(): diverged
            what = f"validation loss {val['loss']:.4g} at step {self.at.step}: the run has diverged"
            self._fail(f"{what} (perplexity {val['ppl']:.4g})", "Lower the learning rate or check the data.")
        if val["loss"] < self.best_val:
            self.best_val = val["loss"]
            self.save("best.pt")

    def save(self, name: str) -> None:
        """An atomic checkpoint holding everything ``train(resume=...)`` needs to continue exactly."""
        config, folder = self.config, self.config.checkpoint_dir
        if folder is None or self.rank != 0:
            return
        state = dict(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict())
        state.update(asdict(self.at), history=list(self.history), train_config=asdict(config))
        if not all(p.isfinite().all() for p in self.model.parameters()):  # diverged: never saved
            self._fail(f"weights hold NaN or inf at step {self.at.step}", "Lower the learning rate.")
        self.saved = ck.save_checkpoint(Path(folder) / name, self.model, **state, tokenizer=config.tokenizer)

    def _fail(self, what: str, fix: str) -> NoReturn:
        """Stop the run, naming its newest good checkpoint or that none was saved (finite ones only are)."""
        self.bar.close()
        where = "; no checkpoint was saved before it" if self.config.checkpoint_dir else ""
        where = f"; the last good checkpoint is {self.saved}" if self.saved else where
        raise FloatingPointError(f"{what}{where}. {fix}")


def _forward_loss(model: torch.nn.Module, compile: bool):
    """``inputs -> (loss, n_tokens)``, compiled if asked; only the loss, as a graph returning the (B, T, V)
    logits would build as large a zero gradient. Dynamic shapes recompile once, at the first shape change."""

    def forward_loss(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = training_loss(model, inputs)
        return out["loss"], out["n_tokens"]

    return torch.compile(forward_loss) if compile else forward_loss
