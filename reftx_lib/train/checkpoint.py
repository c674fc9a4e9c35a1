"""Checkpoints that can be trusted: safe to open, checked when read, written atomically, complete enough
to resume exactly.

A checkpoint is two files side by side:

- ``<name>.safetensors``: the model's weights (``safetensors``: tensors only, no code can
  run when they are read), with the model's class and config, and two checksums in its header;
- ``<name>.pt``: everything else a resumed run needs (optimizer and scheduler states, every
  RNG state, the position in the data, the training history, the training config and the
  tokenizer's name), read with ``torch.load(weights_only=True)``: plain containers and
  tensors, no pickled code.

The sha256 of the ``.pt`` file and of the weights are written into the weights' header, so a
flipped byte in either file, or a pair of files from two different saves, is an error that
names the file, not a model that silently computes something else. ``load_model`` rebuilds
the model from the checkpoint alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model as save_weights

from ..model.config import ModelConfig
from ..model.transformer import (
    BaseLanguageModel,
    ReferenceDecoderOnly,
    ReferencePrefixLM,
    ReferenceTransformer,
)

MODEL_CLASSES: dict[str, type[BaseLanguageModel]] = {
    "ReferenceTransformer": ReferenceTransformer,
    "ReferenceDecoderOnly": ReferenceDecoderOnly,
    "ReferencePrefixLM": ReferencePrefixLM,
}
FORMAT = "reftx-checkpoint-2"  # safetensors weights + a weights_only state file


def rng_state() -> dict:
    """Every random number generator a training step touches (dropout, shuffling), as tensors and numbers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
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
    for name, tensor in sorted(model.state_dict().items()):
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
    """Write ``model`` and ``state`` (optimizer, scheduler, step, ...) as ``path`` plus its ``.safetensors``.

    Temporary files a killed earlier save left behind are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path.name, weights_path(path).name):
        for leftover in path.parent.glob(f".{stale}.*.tmp"):
            leftover.unlink(missing_ok=True)
    buffer = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "model_class": type(model).__name__,
            "model_config": model.config.to_dict(),
            "rng": rng_state(),
            **state,
        },
        buffer,
    )
    state_bytes = buffer.getvalue()
    metadata = {
        "format": FORMAT,
        "model_class": type(model).__name__,
        "model_config": json.dumps(model.config.to_dict()),
        "state_file": path.name,
        "state_sha256": hashlib.sha256(state_bytes).hexdigest(),
        "weights_sha256": _weights_digest(model),
    }
    # Both files are written in full before either is renamed into place, so a kill can only fall
    # between the two renames (microseconds); the weights' header vouches for the state, so even
    # that torn pair is caught when it is read, never trusted.
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
            "of the old single-file format, which runs code from the file when it is read. Train again, or, "
            "only for a file you made yourself, convert it once with "
            "reftx_lib.train.checkpoint.convert_trusted_legacy(path)"
        )
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _damaged(weights, f"{type(exc).__name__}: {str(exc)[:120]}") from None
    if metadata.get("format") != FORMAT:
        raise _damaged(weights, f"format {metadata.get('format')!r}, expected {FORMAT!r}")
    return metadata


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and check a checkpoint written by ``save_checkpoint``; the weights are loaded by ``model_from``.

    A missing file names the path; a damaged or mismatched one names the file and suggests ``best.pt``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train first (python -m course train ...) or point to an existing "
            ".pt file"
        )
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
    """Load the weights of a checkpoint read by ``load_checkpoint`` into ``model``, checked against
    their sha256; a model of another shape is an error that names the file."""
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


def kept_steps(folder: str | Path) -> dict[int, Path]:
    """The ``step-<N>.pt`` checkpoints a run with ``keep_every`` left in ``folder``, by step.

    They let a metric that is too slow to compute at every evaluation (ROUGE of generated
    summaries) be traced against training tokens after the run.
    """
    found = {int(p.stem.removeprefix("step-")): p for p in Path(folder).glob("step-*.pt")}
    return dict(sorted(found.items()))


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> BaseLanguageModel:
    """Rebuild the model from the checkpoint's stored class and config, then load its checked weights."""
    return model_from(load_checkpoint(path, map_location))


def convert_trusted_legacy(path: str | Path) -> Path:
    """Rewrite a single-file checkpoint of the old format (before safetensors) in the current one.

    Reading the old format runs code from the file (``weights_only=False``): call this only on a
    file you made yourself. The converted checkpoint replaces it under the same name.
    """
    path = Path(path)
    old = torch.load(path, map_location="cpu", weights_only=False)
    model = MODEL_CLASSES[old["model_class"]](config=ModelConfig.from_dict(old["model_config"]))
    model.load_state_dict(old.pop("model"))
    name, keys, pos, has_gauss, cached = old["rng"]["numpy"]
    old["rng"]["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    for key in ("model_class", "model_config"):
        old.pop(key)
    return save_checkpoint(path, model, **old)
