"""Training and measuring a model: ``trainer`` (the loop, resuming), ``step`` and ``loss`` (one training
step and its loss), ``checkpoint`` (saving and loading runs), ``evaluation`` (loss, perplexity, summaries,
ROUGE) and ``device`` (which device, its name and memory). It imports ``model`` and ``data``, never
``course`` or ``tools``.
"""
