"""Training and measuring a model: ``trainer`` (the loop, resuming), ``step`` and ``loss`` (one step and
its loss), ``checkpoint``, ``evaluation`` (loss, perplexity, summaries, ROUGE) and ``device``. It imports
``model`` and ``data``, never ``course`` or ``tools``."""
