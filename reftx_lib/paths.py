"""Where the course keeps its data and caches.

One module decides every path so notebooks, tests and scripts agree on them, and
so a user can move data or caches with an environment variable instead of editing code.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path


def repo_root() -> Path:
    """Return the repository root (the folder holding ``reftx_lib/``).

    Paths are resolved from the package, not the working directory, so a notebook
    started from ``notebooks/`` finds the same data as a test started from the root.
    """
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Return (and create) the folder for derived artifacts such as tokenizers.

    ``REFTX_CACHE_DIR`` overrides the default ``<repo>/.cache/reftx`` so that CI or a
    read-only checkout can put caches elsewhere. Everything here can be rebuilt.
    """
    env = os.environ.get("REFTX_CACHE_DIR")
    path = Path(env).expanduser() if env else repo_root() / ".cache" / "reftx"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_search_path() -> list[Path]:
    """Return the folders searched, in order, for local copies of the corpora.

    The data has non-commercial licences, so it is never committed: it lives in a
    sibling ``shared/data`` folder, a ``<repo>/data`` folder, or wherever
    ``REFTX_DATA_DIR`` points (checked first, so users can override the others).
    """
    paths = []
    root = repo_root()
    defaults = [root / "data", (root.parent / "shared" / "data").resolve()]
    env = os.environ.get("REFTX_DATA_DIR")
    if env:
        paths.append(Path(env).expanduser())
        if not paths[0].is_dir():
            warnings.warn(
                f"REFTX_DATA_DIR={env} is not a folder; looking in {', '.join(map(str, defaults))} "
                "instead. Fix the path or unset REFTX_DATA_DIR.",
                stacklevel=2,
            )
    return paths + defaults


def checkpoint_dir(preset: str, name: str) -> Path:
    """Where the course keeps the checkpoint of model ``name`` trained at ``preset``.

    Later notebooks reuse earlier notebooks' models from here (``REFTX_CHECKPOINT_DIR``
    overrides ``<repo>/checkpoints``); nothing here is committed.
    """
    env = os.environ.get("REFTX_CHECKPOINT_DIR")
    return (Path(env).expanduser() if env else repo_root() / "checkpoints") / preset / name
