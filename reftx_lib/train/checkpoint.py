"""Checkpoints that can be trusted: safe to open, checked when read, atomic, complete enough to resume
exactly, reused only by the run that wrote them (``run_identity``). ``<name>.pt`` is the state (read
``weights_only``), ``<name>.<its sha256>.safetensors`` the weights (no code runs when read), and the
``.pt`` is renamed into place last: a kill at any moment leaves the previous checkpoint whole."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from filelock import SoftFileLock, Timeout
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model as save_weights

from ..model.config import ModelConfig
from ..model.transformer import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer

MODEL_CLASSES = {cls.__name__: cls for cls in (ReferenceTransformer, ReferenceDecoderOnly)}
FORMAT = "reftx-checkpoint-3"  # safetensors weights + a weights_only state file, the layout of issue 28
_OLD_FORMATS = {"reftx-checkpoint-2": "from before the model's layers were rewritten (issue 28)"}
# The TrainConfig fields that decide a run's weights (not paths, stopping rules, evaluation or logging).
OPTIMIZER_FIELDS = ("lr", "min_lr_ratio", "warmup_steps", "weight_decay", "betas", "grad_clip")
RUN_FIELDS = ("max_steps", *OPTIMIZER_FIELDS, "batch_tokens", "pad_apart", "seed", "data", "tokenizer")


def rng_state() -> dict:
    """Every random number generator a training step touches (dropout, shuffling), as tensors and numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    state["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back the generators ``rng_state`` saved, so a resumed run draws the numbers it would have drawn."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every weight's name and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items(), key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model: BaseLanguageModel, **state) -> Path:
    """Write ``model`` and ``state`` as ``path`` and its weights file, atomically (see the module's doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head, config = {"format": FORMAT, "model_class": type(model).__name__}, model.config.to_dict()
    buffer = io.BytesIO()  # the state is hashed before it is written: its hash names the weights file
    torch.save({**head, "model_config": config, "rng": rng_state(), **state}, buffer)
    state_bytes = buffer.getvalue()
    metadata = {**head, "model_config": json.dumps(config), "state_file": path.name}
    metadata["state_sha256"] = hashlib.sha256(state_bytes).hexdigest()
    metadata["weights_sha256"] = _weights_digest(model)
    weights = path.with_name(f"{path.stem}.{metadata['state_sha256'][:16]}.safetensors")
    tmps = [p.with_name(f".{p.name}.tmp") for p in (path, weights)]  # one run writes a folder
    try:  # both files are on disk before either is renamed: a full disk leaves the previous save whole
        tmps[0].write_bytes(state_bytes)
        save_weights(model, str(tmps[1]), metadata=metadata)
        for tmp in tmps:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
    except (OSError, SafetensorError) as exc:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise OSError(f"cannot save {path} ({exc}): free space, or save to another folder (--out)") from None
    os.replace(tmps[1], weights)  # a new name: the previous checkpoint stays whole
    os.replace(tmps[0], path)  # the commit: from here on ``path`` is the new checkpoint
    stale = [*path.parent.glob(f".{path.stem}.*.tmp"), *path.parent.glob(f"{path.stem}.*safetensors")]
    for old in set(stale) - {weights}:  # what a killed save left, and the previous save's weights
        old.unlink()
    return path


class Unusable(ValueError):
    """``Unusable(path, why)``; its message names the newest checkpoint beside it that loads, when read."""

    def __str__(self) -> str:
        path, why = self.args
        for other in sorted(path.parent.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True):
            with contextlib.suppress(OSError, ValueError, KeyError):  # ``path`` itself fails here
                if load_model(other):
                    return f"{path} is {why}; load {other} instead, which loads"
        return f"{path} is {why}; no checkpoint beside it loads: train again"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a ``save_checkpoint`` file: an unusable one is an error naming one that loads."""
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"{path} is no checkpoint's .pt file: pass a run's last.pt, best.pt or step-<N>.pt")
    if not path.is_file():
        fix = "train first (python -m course train ...) or point to an existing .pt file"
        raise FileNotFoundError(f"no checkpoint at {path}; {fix}")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    weights = path.with_name(f"{path.stem}.{sha[:16]}.safetensors")
    weights = weights if weights.is_file() else path.with_suffix(".safetensors")  # the name before issue 34
    if not weights.is_file() and not list(path.parent.glob(f"{path.stem}.*safetensors")):
        raise ValueError(
            f"{path} has no {path.stem}.<sha256>.safetensors beside it: another program wrote it, or it "
            "has the old single-file format, which runs code when read and is not loaded. Train again"
        )
    if not weights.is_file():
        raise Unusable(path, "damaged (its sha256 names none of the weights files beside it)")
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise Unusable(weights, f"damaged ({type(exc).__name__}: {str(exc)[:120]})") from None
    if metadata.get("format") != FORMAT:
        what = _OLD_FORMATS.get(metadata.get("format"), "not the weights of a reftx checkpoint")
        raise ValueError(f"{weights} is {what} (format {metadata.get('format')!r}). Train again")
    if metadata.get("state_sha256") != sha:
        raise Unusable(path, f"damaged (its sha256 differs from the one recorded in {weights.name})")
    ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)  # checked: it loads
    ckpt.update(path=str(path), weights_file=str(weights), weights_sha256=metadata.get("weights_sha256"))
    return ckpt


def restore_weights(model: BaseLanguageModel, ckpt: dict) -> BaseLanguageModel:
    """Load a ``load_checkpoint`` checkpoint's weights into ``model``, checked against their sha256."""
    weights = Path(ckpt["weights_file"])
    try:
        load_weights(model, str(weights), strict=True)
    except RuntimeError as exc:  # an intact file of another class or shape
        what = f"{weights} holds a {ckpt['model_class']}, which does not fit this {type(model).__name__}"
        raise ValueError(f"{what} ({str(exc)[:160]}); rebuild the model with load_model") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise Unusable(weights, f"damaged ({type(exc).__name__}: {str(exc)[:160]})") from None
    if _weights_digest(model) != ckpt["weights_sha256"]:
        raise Unusable(weights, "damaged (the weights' sha256 differs from the one in its header)")
    bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:  # a diverged run's weights: such a model is never saved, loaded or run
        raise Unusable(weights, f"not finite ({bad[:3]} hold NaN or inf)")
    return model


def model_from(ckpt: dict) -> BaseLanguageModel:
    """The trained model of a checkpoint read by ``load_checkpoint``, rebuilt from its class and config."""
    model = MODEL_CLASSES[ckpt["model_class"]](config=ModelConfig.from_dict(ckpt["model_config"]))
    return restore_weights(model, ckpt)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> BaseLanguageModel:
    """Rebuild the model from the checkpoint's stored class and config, then load its checked weights."""
    return model_from(load_checkpoint(path, map_location))


class CheckpointMismatchError(ValueError):
    """A checkpoint belongs to another run than the one asked for."""


def run_identity(model_class: str, model_config: dict, train_config: dict) -> dict:
    """What makes two runs the same, so a rerun notebook never mixes two runs' weights."""
    config = ModelConfig.from_dict(model_config).to_dict()
    identity = {"model_class": model_class, **{f"model.{k}": v for k, v in config.items()}}
    for name in RUN_FIELDS:
        value = train_config.get(name)
        identity[name] = list(value) if isinstance(value, tuple) else value
    return identity


def identity_of(model: BaseLanguageModel, train_config) -> dict:
    """``run_identity`` of training ``model`` with ``train_config`` (a ``TrainConfig``)."""
    return run_identity(type(model).__name__, model.config.to_dict(), asdict(train_config))


def check_same_run(path: Path, wanted: dict, action: str, fix: str) -> dict:
    """The checkpoint at ``path`` if run ``wanted`` wrote it, else an error naming every differing setting."""
    ckpt = load_checkpoint(path)
    stored = run_identity(ckpt["model_class"], ckpt["model_config"], ckpt["train_config"])
    keys = [k for k in sorted(stored.keys() | wanted.keys()) if stored.get(k) != wanted.get(k)]
    diff = "; ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} here" for k in keys)
    if diff:
        raise CheckpointMismatchError(f"{path} is from another run ({diff}): it cannot be {action}. {fix}")
    return ckpt


def writer_lock(folder: Path) -> contextlib.AbstractContextManager:
    """Hold ``folder`` for one run from before its first step: an unwritable folder fails then, and a second
    run there (it would delete the first's temporary files) is refused. A killed run's lock is taken over."""
    lock = SoftFileLock(folder / ".writer.lock", timeout=0)
    fix = "train into another folder (checkpoint_dir, command line: --out)"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        holder, held = lock.pid, lock.acquire()  # a killed run's lock stays: filelock takes it over
    except (Timeout, OSError) as exc:  # another run holds it (wait for it to end), or it is not writable
        why = f"another run, process {lock.pid}, writes there" if isinstance(exc, Timeout) else exc.strerror
        raise ValueError(f"cannot write checkpoints to {folder} ({why or exc}); {fix}") from None
    if holder is not None:
        warnings.warn(f"took over {folder} from process {holder}, which is no longer running", stacklevel=2)
    return held  # releases the lock when the run's ``with`` block ends


def save_pretrained(model: BaseLanguageModel, folder: str | Path) -> Path:
    """``config.json`` and ``model.safetensors`` in ``folder``: the Hugging Face Hub layout, no run state."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_class": type(model).__name__, **model.config.to_dict()}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_weights(model, str(folder / "model.safetensors"))
    return folder


def from_pretrained(folder: str | Path) -> BaseLanguageModel:
    """The model ``save_pretrained`` wrote to ``folder``."""
    config = json.loads((Path(folder) / "config.json").read_text())
    model = MODEL_CLASSES[config.pop("model_class")](config=ModelConfig.from_dict(config))
    load_weights(model, str(Path(folder) / "model.safetensors"), strict=True)
    return model
