"""Checkpoints that can be trusted: written atomically, complete enough to resume exactly.

A checkpoint holds the model, optimizer and scheduler states, every RNG state,
the position in the data (epoch and batch), the training history, the model's
config and a reference to its tokenizer. The model can be rebuilt from the
checkpoint alone with ``load_model``.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..model.config import ModelConfig
from ..model.transformer import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer

MODEL_CLASSES: dict[str, type[BaseLanguageModel]] = {
    "ReferenceTransformer": ReferenceTransformer,
    "ReferenceDecoderOnly": ReferenceDecoderOnly,
}


def rng_state() -> dict:
    """Every random number generator a training step touches (dropout, shuffling)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, model: BaseLanguageModel, **state) -> Path:
    """Write ``model`` plus ``state`` (optimizer, scheduler, step, ...) atomically.

    The file is written to a temporary name in the same folder and renamed over
    the target, so a crash mid-write never leaves a truncated checkpoint.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model_class": type(model).__name__,
        "model_config": model.config.to_dict(),
        "model": model.state_dict(),
        "rng": rng_state(),
        **state,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``; a missing file names the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train first (python -m reftx_lib train ...) "
            "or point to an existing .pt file"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as exc:  # truncated or damaged
        raise ValueError(
            f"{path} is damaged or is not a reftx checkpoint ({type(exc).__name__}: {str(exc)[:120]}); "
            f"load {path.parent / 'best.pt'} instead if it exists, or train again"
        ) from None


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> BaseLanguageModel:
    """Rebuild the model from the checkpoint's stored class and config, then load its weights."""
    return model_from(load_checkpoint(path, map_location))


def model_from(ckpt: dict) -> BaseLanguageModel:
    """The trained model held by a loaded checkpoint (``load_checkpoint``)."""
    cls = MODEL_CLASSES[ckpt["model_class"]]
    model = cls(config=ModelConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model
