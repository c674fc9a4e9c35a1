"""Where the course keeps its data and caches: one module, so notebooks, tests and scripts agree, and an
environment variable moves them without editing code."""

from __future__ import annotations

import os
import warnings
from pathlib import Path


def repo_root() -> Path:
    """The folder holding ``reftx_lib/``, found from the package so any working directory gives the same."""
    return Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """The (created) folder for rebuildable artifacts such as tokenizers; ``REFTX_CACHE_DIR`` moves it."""
    env = os.environ.get("REFTX_CACHE_DIR")
    path = Path(env).expanduser() if env else repo_root() / ".cache" / "reftx"
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_search_path() -> list[Path]:
    """Folders searched in order for the corpora, never committed (non-commercial licences):
    ``REFTX_DATA_DIR`` first, then ``<repo>/data`` and a sibling ``shared/data``."""
    root = repo_root()
    defaults = [root / "data", (root.parent / "shared" / "data").resolve()]
    env = os.environ.get("REFTX_DATA_DIR")
    if not env:
        return defaults
    if not Path(env).expanduser().is_dir():
        warnings.warn(
            f"REFTX_DATA_DIR={env} is not a folder; looking in {', '.join(map(str, defaults))} "
            "instead. Fix the path or unset REFTX_DATA_DIR.",
            stacklevel=2,
        )
    return [Path(env).expanduser(), *defaults]
