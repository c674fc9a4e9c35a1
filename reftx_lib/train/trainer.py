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
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..data.batching import pad_batch, token_budget_batches
from ..model.config import ModelConfig
from ..model.transformer import BaseLanguageModel
from .checkpoint import load_checkpoint, restore_weights, save_checkpoint, set_rng_state
from .device import resolve_device
from .evaluation import evaluate_loss
from .memory import peak_memory_mb
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
        for name in ("max_steps", "batch_tokens", "eval_every", "log_every"):
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
    device = resolve_device(config.device)
    rank, world = _world()
    ckpt_dir = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    wanted = identity_of(model, config)
    if resume is not None:
        ckpt = load_checkpoint(resume, map_location=device)
        check_same_run(
            Path(resume),
            stored_identity(ckpt),
            wanted,
            "resumed by this run",
            "Resume with the model, data and settings it was trained with, or start without --resume.",
        )
    if ckpt_dir is not None and rank == 0:
        check_writable(ckpt_dir)
        last = ckpt_dir / "last.pt"
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
    seed_everything(config.seed)
    train_rows, val_rows = _rows(train_data), _rows(val_data)
    lengths = [len(r) for r in train_rows]
    model.to(device)
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = make_optimizer(model, config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, config.warmup_steps, config.max_steps, config.min_lr_ratio)
    )
    history, step, epoch, batch_pos, elapsed = History(), 0, 0, 0, 0.0
    totals = {"tokens": 0, "supervised": 0, "padded": 0}
    if resume is not None:
        restore_weights(model, ckpt)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step, epoch, batch_pos, elapsed = ckpt["step"], ckpt["epoch"], ckpt["batch_pos"], ckpt["elapsed"]
        totals = ckpt["totals"]
        history = History(ckpt["history"])
        set_rng_state(ckpt["rng"])
    ckpt_every = config.checkpoint_every or config.eval_every
    end = min(config.max_steps, config.stop_after or config.max_steps)
    autocast = autocast_for(device)

    def save(name: str) -> None:
        if ckpt_dir is None or rank != 0:
            return
        save_checkpoint(
            ckpt_dir / name,
            model,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            step=step,
            epoch=epoch,
            batch_pos=batch_pos,
            elapsed=elapsed,
            totals=totals,
            history=list(history),
            train_config=asdict(config),
            tokenizer=config.tokenizer,
        )

    batches = token_budget_batches(lengths, config.batch_tokens, shuffle=True, seed=config.seed + epoch)
    bar = tqdm(
        total=end,
        initial=step,
        desc=type(model).__name__,
        disable=not config.progress or rank != 0,
        dynamic_ncols=True,
    )
    best_val = min((r["val_loss"] for r in history if r["val_loss"] is not None), default=float("inf"))
    log_every = config.log_every or (50 if device.type == "cuda" else 1)
    forward_loss = _forward_loss(ddp_model, config.compile)
    window: list[
        tuple[dict, torch.Tensor, float]
    ] = []  # (record, loss on device, host seconds) since last sync
    window_start = 0.0  # when the window's first step began

    def flush() -> None:
        """Bring the window's losses to the host in one copy; fail on the first non-finite one."""
        nonlocal elapsed
        if not window:
            return
        losses = torch.stack([loss for _, loss, _ in window])  # (n,) on the device
        if world > 1:
            dist.all_reduce(losses)
        values = losses.tolist()  # the one host sync per window
        now = time.perf_counter()
        host = sum(dt for _, _, dt in window)
        scale = (now - window_start) / host if host > 0 else 1.0  # queued work finishes during the sync
        for (record, _, dt), value in zip(window, values):
            if not math.isfinite(value):
                bar.close()
                where = f"; the last good checkpoint is {ckpt_dir / 'last.pt'}" if ckpt_dir else ""
                raise FloatingPointError(
                    f"non-finite training loss ({value}) at step {record['step']}{where}. "
                    "Lower the learning rate or check the data of this batch."
                )
            elapsed += dt * scale
            record.update(train_loss=value, wall_time=elapsed, tokens_per_s=record["tokens_per_s"] / scale)
            history.append(record)
        bar.update(len(window))
        bar.set_postfix(loss=f"{values[-1]:.3f}", val=f"{best_val:.3f}" if best_val < float("inf") else "-")
        window.clear()

    model.train()
    while step < end and (config.max_time_s is None or elapsed < config.max_time_s):
        if batch_pos >= len(batches):
            epoch, batch_pos = epoch + 1, 0
            batches = token_budget_batches(
                lengths, config.batch_tokens, shuffle=True, seed=config.seed + epoch
            )
        index = batches[batch_pos]
        t0 = time.perf_counter()
        window_start = window_start if window else t0  # evaluation and saving between windows are not counted
        full = pad_batch([train_rows[i] for i in index])  # (B, T): the global batch, on the host
        share = full[rank::world]  # this rank's rows; a rank left without rows runs row 0 at weight 0
        inputs = model.training_inputs(share if len(share) else full[:1])
        if device.type == "cuda":
            inputs = {k: v.pin_memory() for k, v in inputs.items()}
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        n_tokens, n_supervised = int((full != model.config.pad_token_id).sum()), model.counted_targets(full)

        # DDP averages gradients over ranks; weighting each rank's loss by its tokens gives the global mean.
        weight = (world / n_supervised if len(share) else 0.0) if world > 1 else None

        def loss_fn(inputs: dict[str, torch.Tensor] = inputs, weight: float | None = weight) -> torch.Tensor:
            loss, n_local = forward_loss(inputs)
            return loss if weight is None else loss * n_local * weight

        lr = scheduler.get_last_lr()[0]
        loss = training_step(
            model, loss_fn, optimizer, scheduler=scheduler, grad_clip=config.grad_clip, autocast=autocast
        )
        step, batch_pos = step + 1, batch_pos + 1
        totals["tokens"] += n_tokens
        totals["supervised"] += n_supervised
        totals["padded"] += full.numel()
        dt = time.perf_counter() - t0  # host time; on CUDA the device may still be working
        record = {
            "step": step,
            "epoch": epoch,
            "train_loss": None,
            "val_loss": None,
            "val_ppl": None,
            "lr": lr,
            "tokens": totals["tokens"],
            "supervised_tokens": totals["supervised"],
            "padding_waste": 1 - totals["tokens"] / totals["padded"],
            "wall_time": None,
            "tokens_per_s": n_tokens / dt,
            "peak_mem_mb": peak_memory_mb(device),
        }
        window.append((record, (loss.detach() / world) if world > 1 else loss.detach(), dt))
        last = step == end
        evaluate, checkpoint = step % config.eval_every == 0 or last, step % ckpt_every == 0 or last
        if len(window) >= log_every or evaluate or checkpoint:
            flush()
            last = last or (config.max_time_s is not None and elapsed >= config.max_time_s)
            evaluate, checkpoint = evaluate or last, checkpoint or last
        if evaluate:
            val = evaluate_loss(model, val_rows, config.batch_tokens, device, max_batches=config.eval_batches)
            record["val_loss"], record["val_ppl"] = val["loss"], val["ppl"]
            if not math.isfinite(val["ppl"]):  # a NaN loss, or one too large for exp(): diverged
                bar.close()
                where = f"; the last good checkpoint is {ckpt_dir / 'last.pt'}" if ckpt_dir else ""
                raise FloatingPointError(
                    f"validation loss {val['loss']:.4g} at step {step}: the run has diverged "
                    f"(perplexity {val['ppl']:.4g}){where}. Lower the learning rate or check the data."
                )
            if val["loss"] < best_val:
                best_val = val["loss"]
                save("best.pt")
        if checkpoint:
            save("last.pt")
    flush()
    bar.close()
    model.eval()
    return history


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
