"""Static figures of attention (they survive where widgets render blank): matplotlib and seaborn.

``plot_attention`` draws one matrix with token labels, ``plot_attention_grid`` every
layer and head of one kind, and ``plot_stat_distributions`` violins of one statistic
from ``stats.stats_over_dataset`` frames. Rows are queries and columns keys, as
everywhere in this package (see ``extract``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .extract import AttentionRecord
from .stats import STATS


def _axis_names(kind: str) -> tuple[str, str]:
    """What the rows and columns of ``kind`` are, for titles and axis labels."""
    return {
        "encoder": ("queries (source tokens)", "keys (source tokens)"),
        "decoder": ("queries (decoder inputs)", "keys (decoder inputs)"),
        "cross": ("target tokens (decoder inputs)", "source tokens"),
    }[kind]


def plot_attention(
    matrix: np.ndarray,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    title: str = "",
    ax=None,
    *,
    rows: str = "queries",
    columns: str = "keys",
    max_labels: int = 60,
) -> Figure:
    """Heat map of one (T_query, T_key) attention matrix with token labels.

    The title and axis labels state the convention (``rows = queries, columns = keys``;
    pass ``rows="target tokens"`` for cross-attention). Tick labels are dropped beyond
    ``max_labels`` tokens, where they would be unreadable anyway.
    """
    matrix = np.asarray(matrix)
    if matrix.shape != (len(query_labels), len(key_labels)):
        raise ValueError(
            f"matrix shape {matrix.shape} does not match {len(query_labels)} query "
            f"and {len(key_labels)} key labels"
        )
    if ax is None:
        size = min(12.0, 2.5 + 0.22 * max(matrix.shape))
        fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-9), aspect="auto")
    ax.grid(False)  # a style's grid lines would cut through the cells
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    _label_axes(ax, query_labels, key_labels, max_labels)
    ax.set_ylabel(f"rows = {rows}")
    ax.set_xlabel(f"columns = {columns}")
    ax.set_title(
        f"{title}\n(rows = {rows}, columns = {columns})" if title else f"rows = {rows}, columns = {columns}"
    )
    return ax.figure


def _label_axes(
    ax,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    max_labels: int,
    rows: bool = True,
    columns: bool = True,
) -> None:
    if rows and len(query_labels) <= max_labels:
        ax.set_yticks(range(len(query_labels)), query_labels, fontsize=8)
    else:
        ax.set_yticks([])
    if columns and len(key_labels) <= max_labels:
        ax.set_xticks(range(len(key_labels)), key_labels, fontsize=8, rotation=90)
    else:
        ax.set_xticks([])


def plot_attention_grid(
    record: AttentionRecord, kind: str, path: str | Path | None = None, max_labels: int = 30
) -> Figure:
    """A layers x heads grid of heat maps (like d2l's ``show_heatmaps``); saved to ``path`` if given.

    One colour scale for the whole grid, so heads can be compared by eye.
    """
    att = record.attention(kind)  # (L, H, Tq, Tk)
    n_layers, n_heads, t, s = att.shape
    q_labels, k_labels = record.query_labels(kind), record.key_labels(kind)
    rows, columns = _axis_names(kind)
    cell = min(3.5, max(1.8, 0.12 * max(t, s)))
    fig, axes = plt.subplots(
        n_layers,
        n_heads,
        figsize=(cell * n_heads + 1.5, cell * n_layers + 1.0),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            image = ax.imshow(
                att[layer, head], cmap="viridis", vmin=0.0, vmax=float(att.max()), aspect="auto"
            )
            ax.grid(False)
            _label_axes(ax, q_labels, k_labels, max_labels, rows=head == 0, columns=layer == n_layers - 1)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.6)
    fig.suptitle(f"{kind} attention: rows = {rows}, columns = {columns}")
    if path is not None:
        _save(fig, path)
    return fig


def plot_stat_distributions(
    df: pd.DataFrame,
    stat: str = "entropy",
    x: str = "kind",
    hue: str | None = "corpus",
    path: str | Path | None = None,
    ax=None,
) -> Figure:
    """Violin plots of one statistic from ``stats_over_dataset`` frames, e.g. comparing corpora.

    Each violin pools every (example, layer, head) row of its group. When the frame has
    ``uniform_<stat>``, a black ``x`` marks the mean uniform-attention value of each group.
    """
    if stat not in df.columns:
        raise ValueError(
            f"no column {stat!r}; statistics in this frame: {[c for c in STATS if c in df.columns]}"
        )
    hue = hue if hue in df.columns else None
    data = df.dropna(subset=[stat])
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    order = list(pd.unique(data[x]))
    hue_order = list(pd.unique(data[hue])) if hue else [None]
    sns.violinplot(
        data=data,
        x=x,
        y=stat,
        hue=hue,
        order=order,
        hue_order=hue_order if hue else None,
        cut=0,
        inner="quartile",
        ax=ax,
    )
    baseline = f"uniform_{stat}"
    if baseline in data.columns:
        width = 0.8 / len(hue_order)  # seaborn's default dodge: groups share 0.8 of each slot
        for k, level in enumerate(hue_order):
            part = data if level is None else data[data[hue] == level]
            means = part.groupby(x)[baseline].mean()
            xs = [order.index(cat) - 0.4 + width * (k + 0.5) for cat in means.index]
            ax.scatter(
                xs,
                means.values,
                marker="x",
                color="black",
                zorder=3,
                label="uniform attention" if k == 0 else None,
            )
        ax.legend(fontsize=8, title=hue)
    ax.set_title(f"{stat} per (example, layer, head)")
    if path is not None:
        _save(ax.figure, path)
    return ax.figure


def _save(fig: Figure, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
