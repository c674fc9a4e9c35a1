"""The interactive and export side: an ipywidgets attention browser and the bertviz export.

* ``AttentionExplorer`` is an ipywidgets browser over corpora, examples, layers and heads;
* ``to_bertviz`` exports a record to bertviz's ``head_view`` layout.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import Image, display
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..model.transformer import BaseLanguageModel
from .extract import _OUTPUT_KEYS, AttentionRecord, extract_attention
from .plots import _axis_names, plot_attention


# ============================================================== bertviz
def to_bertviz(
    record_or_outputs: AttentionRecord | Mapping,
    *,
    encoder_tokens: Sequence[str] | None = None,
    decoder_tokens: Sequence[str] | None = None,
) -> dict:
    """Keyword arguments for ``bertviz.head_view`` (or ``model_view``): ``head_view(**to_bertviz(record))``.

    Attention goes out as one tensor per layer, each (1, heads, T_query, T_key):
    ``encoder_attention`` / ``decoder_attention`` / ``cross_attention`` plus
    ``encoder_tokens`` / ``decoder_tokens`` for the encoder-decoder, or ``attention`` +
    ``tokens`` for the decoder-only model. A raw model output dict (batch of one, no
    padding) is accepted too; then pass the token labels as keywords.
    """
    if isinstance(record_or_outputs, AttentionRecord):
        atts = record_or_outputs.attentions
        layers = {
            k: [torch.from_numpy(a[layer])[None] for layer in range(a.shape[0])] for k, a in atts.items()
        }
        encoder_tokens = record_or_outputs.source_tokens
        decoder_tokens = record_or_outputs.decoder_tokens
    else:
        layers = {
            k: [a.detach().float().cpu() for a in record_or_outputs[key]]
            for k, key in _OUTPUT_KEYS.items()
            if key in record_or_outputs
        }
        if "attentions" in record_or_outputs:
            layers["decoder"] = [a.detach().float().cpu() for a in record_or_outputs["attentions"]]
        if not layers or layers[next(iter(layers))][0].size(0) != 1:
            raise ValueError(
                "to_bertviz needs attention of exactly one example (batch size 1); "
                "use extract_attention to get an unpadded record"
            )
    if "cross" in layers:
        return {
            "encoder_attention": layers["encoder"],
            "decoder_attention": layers["decoder"],
            "cross_attention": layers["cross"],
            "encoder_tokens": encoder_tokens,
            "decoder_tokens": decoder_tokens,
        }
    return {"attention": layers["decoder"], "tokens": decoder_tokens}


# ============================================================== explorer
@dataclass
class _Source:
    """One explorer entry: a model with its examples, or precomputed records."""

    model: BaseLanguageModel | None = None
    examples: Sequence = ()
    tokenizer: object = None
    records: Sequence[AttentionRecord] | None = None
    count: int = field(init=False)

    def __post_init__(self) -> None:
        self.count = len(self.records) if self.records is not None else len(self.examples)
        if not self.count:
            raise ValueError("an explorer source needs at least one example or record")


class AttentionExplorer:
    """Interactive attention browser built from ipywidgets.

    ``sources`` maps a name (model/corpus) to ``(model, examples, tokenizer)`` or to a
    list of precomputed ``AttentionRecord``s. Controls: source, example, kind, layer,
    head (or the average of heads) and a query token; the view shows the heat map (the
    chosen query's row is outlined) and the top-k keys of that query. Records are
    extracted lazily and cached per (source, example).

    Show it with ``display(explorer.widget)`` (or just ``explorer`` as a cell's last line).
    ``current_matrix()`` returns the matrix on screen, so tests can drive the widgets.
    """

    def __init__(self, sources: Mapping[str, tuple | Sequence[AttentionRecord]], top_k: int = 5) -> None:
        if not sources:
            raise ValueError(
                "AttentionExplorer needs at least one source: {name: (model, examples, tokenizer)}"
            )
        self._sources = {name: self._source(name, spec) for name, spec in sources.items()}
        self._cache: dict[tuple[str, int], AttentionRecord] = {}
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
        self.plot = widgets.Output()
        self.top_keys = widgets.HTML()
        controls = [self.source, self.example, self.kind, self.layer, self.head, self.query]
        for control in controls:
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox(
            [widgets.HBox(controls[:3]), widgets.HBox(controls[3:]), widgets.HBox([self.plot, self.top_keys])]
        )
        self._sync()

    @staticmethod
    def _source(name: str, spec) -> _Source:
        if isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[0], BaseLanguageModel):
            return _Source(model=spec[0], examples=spec[1], tokenizer=spec[2])
        if isinstance(spec, Sequence) and spec and all(isinstance(r, AttentionRecord) for r in spec):
            return _Source(records=spec)
        raise ValueError(f"source {name!r} must be (model, examples, tokenizer) or a list of AttentionRecord")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------- state
    def record(self) -> AttentionRecord:
        """The record of the selected source and example (extracted once, then cached)."""
        key = (self.source.value, self.example.value)
        if key not in self._cache:
            src = self._sources[key[0]]
            self._cache[key] = (
                src.records[key[1]]
                if src.records is not None
                else extract_attention(src.model, src.examples[key[1]], src.tokenizer)
            )
        return self._cache[key]

    def current_matrix(self) -> np.ndarray:
        """The (T_query, T_key) matrix shown right now."""
        return self._shown

    def current_top_keys(self) -> list[tuple[int, str, float]]:
        """(key position, key label, weight) of the top-k keys of the selected query token."""
        row = self._shown[self.query.value]
        labels = self.record().key_labels(self.kind.value)
        best = np.argsort(-row, kind="stable")[: self.top_k]
        return [(int(j), labels[j], float(row[j])) for j in best]

    # ----------------------------------------------------------- updates
    def _on_change(self, change) -> None:
        if not self._syncing:
            self._sync()

    def _sync(self) -> None:
        """Make every control's options fit the current selection (keeping values that still fit),
        then draw."""
        self._syncing = True
        try:
            self.example.max = self._sources[self.source.value].count - 1
            record = self.record()
            _set_options(self.kind, record.kinds)
            att = record.attentions[self.kind.value]
            self.layer.max = att.shape[0] - 1
            _set_options(self.head, [("average", -1)] + [(str(h), h) for h in range(att.shape[1])])
            labels = record.query_labels(self.kind.value)
            _set_options(self.query, [(f"{i}: {label}", i) for i, label in enumerate(labels)])
        finally:
            self._syncing = False
        self._render()

    def _render(self) -> None:
        record, kind = self.record(), self.kind.value
        head = None if self.head.value == -1 else self.head.value
        self._shown = record.matrix(kind, self.layer.value, head)
        rows, columns = _axis_names(kind)
        fig = Figure(figsize=(7.5, 6.5))  # not pyplot: no global state, no double display
        fig.subplots_adjust(left=0.17, right=0.92, bottom=0.17, top=0.9)  # fixed margins: one draw per frame
        ax = fig.subplots()
        head_name = "mean of heads" if head is None else f"head {head}"
        plot_attention(
            self._shown,
            record.query_labels(kind),
            record.key_labels(kind),
            f"{kind}, layer {self.layer.value}, {head_name}",
            ax=ax,
            rows=rows,
            columns=columns,
        )
        q = self.query.value
        ax.add_patch(
            Rectangle((-0.5, q - 0.5), self._shown.shape[1], 1, fill=False, edgecolor="red", linewidth=1.5)
        )
        png = io.BytesIO()
        fig.savefig(
            png, format="png", dpi=80
        )  # explicit PNG: works whatever matplotlib backend the kernel uses
        with self.plot:
            self.plot.clear_output(wait=True)
            display(Image(data=png.getvalue(), format="png"))
        cells = "".join(
            f"<tr><td>{j}</td><td><code>{html.escape(label)}</code></td><td>{w:.3f}</td></tr>"
            for j, label, w in self.current_top_keys()
        )
        self.top_keys.value = (
            f"<b>top {self.top_k} keys of query {q} "
            f"(<code>{html.escape(record.query_labels(kind)[q])}</code>)</b>"
            f"<table><tr><th>key</th><th>token</th><th>weight</th></tr>{cells}</table>"
        )


def _set_options(control: widgets.Dropdown, options: list) -> None:
    """Replace a dropdown's options, keeping its value when it is still offered."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    old = control.value
    if list(control.options) != options:
        control.options = options
    control.value = old if old in values else values[0]
