"""Static matplotlib figures of attention, which survive where widgets render blank: one matrix
(``plot_attention``) or every layer and head of one kind (``plot_attention_grid``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .extract import AttentionRecord

AXIS_NAMES = {  # what the rows and columns of each kind are
    "encoder": ("queries (source tokens)", "keys (source tokens)"),
    "decoder": ("queries (decoder inputs)", "keys (decoder inputs)"),
    "cross": ("target tokens (decoder inputs)", "source tokens"),
}


def _label_axes(
    ax, query_labels: Sequence[str], key_labels: Sequence[str], max_labels: int, rows=True, columns=True
):
    """Token labels on the ticks, left out beyond ``max_labels`` tokens where they would be unreadable."""
    if rows and len(query_labels) <= max_labels:
        ax.set_yticks(range(len(query_labels)), query_labels, fontsize=8)
    else:
        ax.set_yticks([])
    if columns and len(key_labels) <= max_labels:
        ax.set_xticks(range(len(key_labels)), key_labels, fontsize=8, rotation=90)
    else:
        ax.set_xticks([])


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
    """Heat map of one (T_query, T_key) matrix whose labels say what rows and columns are, even copied out."""
    matrix = np.asarray(matrix)
    if matrix.shape != (len(query_labels), len(key_labels)):
        labels = f"{len(query_labels)} query and {len(key_labels)} key labels"
        raise ValueError(f"matrix shape {matrix.shape} does not match {labels}")
    if ax is None:
        size = min(12.0, 2.5 + 0.22 * max(matrix.shape))
        _, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(float(matrix.max()), 1e-9), aspect="auto")
    ax.grid(False)  # a style's grid lines would cut through the cells
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    _label_axes(ax, query_labels, key_labels, max_labels)
    ax.set(ylabel=f"rows = {rows}", xlabel=f"columns = {columns}")
    convention = f"rows = {rows}, columns = {columns}"
    ax.set_title(f"{title}\n({convention})" if title else convention)
    return ax.figure


def plot_attention_grid(
    record: AttentionRecord, kind: str, path: str | Path | None = None, max_labels: int = 30
) -> Figure:
    """A layers x heads grid of heat maps on one colour scale, so heads compare by eye; saved to ``path``."""
    att = record.attention(kind)  # (L, H, Tq, Tk)
    n_layers, n_heads, t, s = att.shape
    rows, columns = AXIS_NAMES[kind]
    cell = min(3.5, max(1.8, 0.12 * max(t, s)))
    figsize = (cell * n_heads + 1.5, cell * n_layers + 1.0)
    fig, axes = plt.subplots(
        n_layers, n_heads, figsize=figsize, squeeze=False, sharex=True, sharey=True, layout="constrained"
    )
    for (layer, head), ax in np.ndenumerate(axes):
        image = ax.imshow(att[layer, head], cmap="viridis", vmin=0.0, vmax=float(att.max()), aspect="auto")
        ax.grid(False)
        labels = record.query_labels(kind), record.key_labels(kind)
        _label_axes(ax, *labels, max_labels, rows=head == 0, columns=layer == n_layers - 1)
        ax.set_title(f"layer {layer}, head {head}", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.6)
    fig.suptitle(f"{kind} attention: rows = {rows}, columns = {columns}")
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: str | Path) -> None:
    """Save ``fig`` as a PNG at ``path``, creating its folder: figures go where a run's results go."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
