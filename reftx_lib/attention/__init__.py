"""Attention, read out and drawn: ``extract`` (a model's attention as ``AttentionRecord``s, padding cut
away), ``stats`` (per layer and head next to uniform attention; headless), ``plots`` (matplotlib) and
``explorer`` (ipywidgets, bertviz). Everywhere rows are queries and columns are keys. The course's own
analyses (Exp 1 and Exp 3) are in ``course.attention``.
"""

from .explorer import AttentionExplorer, to_bertviz
from .extract import AttentionRecord, extract_attention
from .plots import plot_attention, plot_attention_grid
from .stats import attention_stats, uniform_baseline
