"""Checkpoints that can be trusted: safe to open, checked when read, written atomically, complete enough
to resume exactly, and reused only by the run that wrote them (``run_identity``). ``<name>.safetensors``
holds the weights (no code runs when read) with class, config and both files' sha256 in its header;
``<name>.pt`` the rest, read ``weights_only``: a flipped byte or a torn pair is an error naming the file."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model as save_weights

from ..model.config import ModelConfig
from ..model.transformer import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer

MODEL_CLASSES = {cls.__name__: cls for cls in (ReferenceTransformer, ReferenceDecoderOnly)}
FORMAT = "reftx-checkpoint-3"  # safetensors weights + a weights_only state file, the layout of issue 28
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


def weights_path(path: str | Path) -> Path:
    """The file that holds the weights of checkpoint ``path``: ``last.pt`` -> ``last.safetensors``."""
    return Path(path).with_suffix(".safetensors")


def _weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every weight's name and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items(), key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _temporary(path: Path, write) -> Path:
    """``write(tmp)`` to a temporary name in ``path``'s folder, flushed to disk; the name is returned."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def save_checkpoint(path: str | Path, model: BaseLanguageModel, **state) -> Path:
    """Write ``model`` and ``state`` as ``path`` and its ``.safetensors``, atomically (see ``_temporary``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path.name, weights_path(path).name):
        for leftover in path.parent.glob(f".{stale}.*.tmp"):
            leftover.unlink(missing_ok=True)
    head, config = {"format": FORMAT, "model_class": type(model).__name__}, model.config.to_dict()
    buffer = io.BytesIO()  # the state is hashed before it is written, so the weights' header can vouch for it
    torch.save({**head, "model_config": config, "rng": rng_state(), **state}, buffer)
    state_bytes = buffer.getvalue()
    metadata = {**head, "model_config": json.dumps(config), "state_file": path.name}
    metadata["state_sha256"] = hashlib.sha256(state_bytes).hexdigest()
    metadata["weights_sha256"] = _weights_digest(model)
    # Both files are complete before either is renamed; the header vouches for the state: a torn pair fails.
    state_tmp = _temporary(path, lambda tmp: Path(tmp).write_bytes(state_bytes))
    weights_tmp = _temporary(weights_path(path), lambda tmp: save_weights(model, tmp, metadata=metadata))
    os.replace(state_tmp, path)
    os.replace(weights_tmp, weights_path(path))
    return path


def _damaged(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is damaged or is not a reftx checkpoint ({why}); load "
        f"{path.parent / 'best.pt'} instead if it exists, or train again"
    )


def _header(path: Path) -> dict[str, str]:
    """The metadata in the weights file of checkpoint ``path`` (checksums, model class and config)."""
    weights = weights_path(path)
    if not weights.is_file():
        raise ValueError(
            f"{path} has no {weights.name} beside it: either the save was cut short, or it is a checkpoint "
            "of the old single-file format, which runs code from the file when it is read and is not "
            "loaded. Train again"
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _damaged(weights, f"{type(exc).__name__}: {str(exc)[:120]}") from None
    if metadata.get("format") == "reftx-checkpoint-2":
        raise ValueError(
            f"{path} was written before the model's layers were rewritten (issue 28): its weights have "
            "other names and post-LN or prefix-LM classes may no longer exist. Train again"
        )
    if metadata.get("format") != FORMAT:
        raise _damaged(weights, f"format {metadata.get('format')!r}, expected {FORMAT!r}")
    return metadata


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a ``save_checkpoint`` file: a damaged one is an error naming it and ``best.pt``."""
    path = Path(path)
    if not path.is_file():
        fix = "train first (python -m course train ...) or point to an existing .pt file"
        raise FileNotFoundError(f"no checkpoint at {path}; {fix}")
    metadata = _header(path)
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != metadata["state_sha256"]:
        raise _damaged(path, f"its sha256 differs from the one recorded in {weights_path(path).name}")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure of a checked file is one clear error
        raise _damaged(path, f"{type(exc).__name__}: {str(exc)[:120]}") from None
    return {**ckpt, "path": str(path), "weights_sha256": metadata["weights_sha256"]}


def restore_weights(model: BaseLanguageModel, ckpt: dict) -> BaseLanguageModel:
    """Load a ``load_checkpoint`` checkpoint's weights into ``model``, checked against their sha256."""
    weights = weights_path(ckpt["path"])
    try:
        load_weights(model, str(weights), strict=True)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _damaged(weights, f"{type(exc).__name__}: {str(exc)[:160]}") from None
    if _weights_digest(model) != ckpt["weights_sha256"]:
        raise _damaged(weights, "the weights' sha256 differs from the one recorded in its header")
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
        raise CheckpointMismatchError(
            f"{path} was written by another run ({diff}), so it cannot be {action}. {fix}"
        )
    return ckpt


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
