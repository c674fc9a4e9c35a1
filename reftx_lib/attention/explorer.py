"""``AttentionExplorer``, an ipywidgets attention browser, and ``to_bertviz``, for bertviz's ``head_view``."""

from __future__ import annotations

import functools
import html
import io
from collections.abc import Callable, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import Image, display
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .extract import _OUTPUT_KEYS, KINDS, AttentionRecord, extract_attention
from .plots import AXIS_NAMES, plot_attention

Labels = Sequence[str] | None


def to_bertviz(
    record: AttentionRecord | Mapping, *, encoder_tokens: Labels = None, decoder_tokens: Labels = None
) -> dict:
    """``bertviz.head_view`` keywords from a record, or from a model's output for one unpadded example."""
    if isinstance(record, AttentionRecord):
        layers = {k: [torch.from_numpy(layer)[None] for layer in a] for k, a in record.attentions.items()}
        encoder_tokens, decoder_tokens = record.source_tokens, record.decoder_tokens
    else:  # a model's output: kind -> one (B, H, Tq, Tk) tensor per layer
        kind_of = {key: k for k, key in _OUTPUT_KEYS.items()} | {"attentions": "decoder"}
        outputs = {kind_of[key]: value for key, value in record.items() if key in kind_of}
        layers = {k: [a.detach().float().cpu() for a in value] for k, value in outputs.items()}
        if not layers or next(iter(layers.values()))[0].size(0) != 1:
            hint = "use extract_attention to get an unpadded record"
            raise ValueError(f"to_bertviz needs attention of exactly one example (batch size 1); {hint}")
    if "cross" not in layers:
        return {"attention": layers["decoder"], "tokens": decoder_tokens}
    tokens = {"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens}
    return {f"{k}_attention": layers[k] for k in KINDS} | tokens


def _source(name: str, spec) -> tuple[int, Callable[[int], AttentionRecord]]:
    """(number of examples, example index -> record) of one explorer source; records are extracted once."""
    if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], torch.nn.Module):
        model, examples, tokenizer = spec
        return len(examples), functools.cache(lambda i: extract_attention(model, examples[i], tokenizer))
    if isinstance(spec, Sequence) and spec and all(isinstance(r, AttentionRecord) for r in spec):
        return len(spec), spec.__getitem__
    raise ValueError(f"source {name!r} must be (model, examples, tokenizer) or a list of AttentionRecord")


class AttentionExplorer:
    """Browse attention by source, example, kind, layer, head and query token, to find heads by eye;
    ``sources``: name -> ``(model, examples, tokenizer)`` or a list of ``AttentionRecord``s (lazy)."""

    def __init__(self, sources: Mapping[str, tuple | Sequence[AttentionRecord]], top_k: int = 5) -> None:
        if not sources:
            shape = "{name: (model, examples, tokenizer)}"
            raise ValueError(f"AttentionExplorer needs at least one source: {shape}")
        self._sources = {name: _source(name, spec) for name, spec in sources.items()}
        if not all(count for count, _ in self._sources.values()):
            raise ValueError("an explorer source needs at least one example or record")
        self.top_k = top_k
        self._shown: np.ndarray | None = None
        self._syncing = False
        style = {"description_width": "initial"}
        self.source = widgets.Dropdown(options=list(self._sources), description="model/corpus", style=style)
        self.example = widgets.IntSlider(min=0, max=0, description="example", continuous_update=False)
        self.kind = widgets.Dropdown(description="kind")
        self.layer = widgets.IntSlider(min=0, max=0, description="layer", continuous_update=False)
        self.head = widgets.Dropdown(description="head")
        self.query = widgets.Dropdown(description="query token")
        self.plot, self.top_keys = widgets.Output(), widgets.HTML()
        controls = [self.source, self.example, self.kind, self.layer, self.head, self.query]
        for control in controls:
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox(
            [widgets.HBox(controls[:3]), widgets.HBox(controls[3:]), widgets.HBox([self.plot, self.top_keys])]
        )
        self._sync()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def record(self) -> AttentionRecord:
        """The record of the selected source and example (extracted once, then cached)."""
        return self._sources[self.source.value][1](self.example.value)

    def current_matrix(self) -> np.ndarray:
        """The (T_query, T_key) matrix shown right now."""
        return self._shown

    def current_top_keys(self) -> list[tuple[int, str, float]]:
        """(key position, key label, weight) of the top-k keys of the selected query token."""
        row = self._shown[self.query.value]
        labels = self.record().key_labels(self.kind.value)
        return [(int(j), labels[j], float(row[j])) for j in np.argsort(-row, kind="stable")[: self.top_k]]

    def _on_change(self, change) -> None:
        if not self._syncing:
            self._sync()

    def _sync(self) -> None:
        """Fit every control's options to the selection (keeping values that still fit), then draw."""
        self._syncing = True
        try:
            self.example.max = self._sources[self.source.value][0] - 1
            record = self.record()
            _set_options(self.kind, record.kinds)
            att = record.attentions[self.kind.value]  # (L, H, Tq, Tk)
            self.layer.max = att.shape[0] - 1
            _set_options(self.head, [("average", -1)] + [(str(h), h) for h in range(att.shape[1])])
            labels = record.query_labels(self.kind.value)
            _set_options(self.query, [(f"{i}: {label}", i) for i, label in enumerate(labels)])
        finally:
            self._syncing = False
        self._render()

    def _render(self) -> None:
        record, kind, q = self.record(), self.kind.value, self.query.value
        head = None if self.head.value == -1 else self.head.value
        self._shown = record.matrix(kind, self.layer.value, head)
        fig = Figure(figsize=(7.5, 6.5))  # not pyplot: no global state, no double display
        fig.subplots_adjust(left=0.17, right=0.92, bottom=0.17, top=0.9)  # fixed margins: one draw per frame
        ax = fig.subplots()
        title = f"{kind}, layer {self.layer.value}, " + ("mean of heads" if head is None else f"head {head}")
        rows, columns = AXIS_NAMES[kind]
        labels = record.query_labels(kind), record.key_labels(kind)
        plot_attention(self._shown, *labels, title, ax, rows=rows, columns=columns)
        ax.add_patch(Rectangle((-0.5, q - 0.5), self._shown.shape[1], 1, fill=False, edgecolor="red", lw=1.5))
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)  # explicit PNG: works whatever backend the kernel uses
        with self.plot:
            self.plot.clear_output(wait=True)
            display(Image(data=png.getvalue(), format="png"))
        cells = "".join(
            f"<tr><td>{j}</td><td><code>{html.escape(label)}</code></td><td>{w:.3f}</td></tr>"
            for j, label, w in self.current_top_keys()
        )
        label = html.escape(record.query_labels(kind)[q])
        self.top_keys.value = (
            f"<b>top {self.top_k} keys of query {q} (<code>{label}</code>)</b>"
            f"<table><tr><th>key</th><th>token</th><th>weight</th></tr>{cells}</table>"
        )


def _set_options(control: widgets.Dropdown, options: list) -> None:
    """Replace a dropdown's options, keeping its value when it is still offered."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    old = control.value
    if list(control.options) != options:
        control.options = options
    control.value = old if old in values else values[0]
