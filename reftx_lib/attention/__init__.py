"""Attention analysis; import from the submodules: ``extract`` (a model's attention as ``AttentionRecord``s,
padding cut away), ``stats`` (per layer and head next to uniform attention; headless), ``plots``
(matplotlib) and ``explorer`` (ipywidgets, bertviz). Everywhere rows are queries and columns are keys.
The course's own analyses (Exp 1 and Exp 3) are in ``course.attention``.
"""
