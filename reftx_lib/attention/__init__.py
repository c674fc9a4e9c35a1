"""Attention analysis, one concept per module; import from the submodules, this package re-exports nothing.

``extract`` runs a model on examples and returns ``AttentionRecord``s with the padding cut
away (imports torch, numpy and the model); ``stats`` summarises records per layer and head,
over datasets, on SAMSum speaker names and by source position (torch, numpy, pandas,
``extract`` and transformers' BPE byte table only, so it runs headless and never loads a
plotting or widget library); ``plots`` draws static matplotlib/seaborn figures (adds
``stats``); ``explorer`` is the interactive and export side, the ipywidgets
``AttentionExplorer`` and ``to_bertviz`` (adds ipywidgets, IPython and ``plots``). Imports
only point down that list, and everywhere rows are queries and columns are keys.
"""
