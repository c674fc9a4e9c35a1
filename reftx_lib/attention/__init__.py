"""Attention, read out and drawn: ``extract`` (a model's attention as ``AttentionRecord``s, padding cut
away), ``stats`` (per layer and head next to uniform attention; headless), ``plots`` (matplotlib) and
``explorer`` (ipywidgets, bertviz). Everywhere rows are queries and columns are keys. The course's own
analyses (Exp 1 and Exp 3) are in ``course.attention``. The names below load on first use, so importing
``stats`` never loads a plotting or widget library."""

import importlib

_HOMES = dict(AttentionExplorer="explorer", to_bertviz="explorer", AttentionRecord="extract")
_HOMES |= dict(extract_attention="extract", plot_attention="plots", plot_attention_grid="plots")
_HOMES |= dict(attention_stats="stats", uniform_baseline="stats")


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
