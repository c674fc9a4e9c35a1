"""What every notebook does first: seed, pick the device, load its budget, print where the run happens.

The printed provenance line is the first output of every notebook, so a reader
of a committed notebook sees which budget, device and commit produced it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from course.budgets import get_budget
from course.report import curves_metrics
from course.results import provenance, save_results
from reftx_lib.paths import repo_root
from reftx_lib.train.device import resolve_device
from reftx_lib.train.trainer import History, seed_everything


@dataclass
class NotebookRun:
    """The run's budget, device and clock; ``figure`` and ``save`` put outputs where the course keeps them."""

    budget: str
    seed: int
    device: torch.device
    config: dict
    started: float = field(default_factory=time.perf_counter)

    @property
    def figure_dir(self) -> Path:
        """``figures/<budget>/``: reference runs are committed, smoke (CI) figures are ignored by git."""
        path = repo_root() / "figures" / self.budget
        path.mkdir(parents=True, exist_ok=True)
        return path

    def figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``figures/<budget>/<name>.png`` and return the path."""
        path = self.figure_dir / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        return path

    def save(
        self,
        experiment: str,
        metrics: dict,
        config: dict | None = None,
        histories: dict[str, History] | None = None,
    ) -> Path:
        """Store ``metrics`` as ``results/<experiment>/<budget>.json`` with full provenance, and with the
        validation curve of every model in ``histories`` (``curves_metrics``)."""
        metrics = {**metrics, **curves_metrics(histories)} if histories else metrics
        prov = provenance(
            self.budget,
            self.device,
            config if config is not None else self.config,
            time.perf_counter() - self.started,
        )
        return save_results(experiment, self.budget, metrics, prov)


def setup_notebook(budget: str, seed: int = 0, device: str = "auto") -> NotebookRun:
    """Seed everything, resolve the device, load the budget and print the provenance line."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    seed_everything(seed)
    run = NotebookRun(budget=budget, seed=seed, device=resolve_device(device), config=get_budget(budget))
    sns.set_theme(context="notebook", style="whitegrid")
    plt.rcParams["figure.dpi"] = 90
    prov = provenance(budget, run.device, {}, 0.0)
    print(
        f"Run: budget={budget} | seed={seed} | device={prov['device']} | torch {prov['torch']} | "
        f"commit {prov['commit']} | {prov['date']}"
    )
    return run
