"""Training and measuring a model: ``step`` (the one training step), ``trainer`` (the loop, resuming),
``checkpoint`` (saving and loading runs), ``evaluation`` (loss, perplexity, ROUGE, summaries), ``device``
(which device, and its name for provenance) and ``memory`` (resident memory, and the memory of one
training step measured alone). It imports ``model`` and ``data``, never ``analysis``, ``course`` or
``bench``.
"""
