"""From files to token batches: ``corpora`` (SAMSum, textbooks, TinyStories: local copy or Hub),
``tokenizer`` (the course's byte-level BPE), ``preprocessing`` (each experiment's row layout) and
``batching``. It imports ``constants`` and ``paths``, never ``model``: data never depends on its network."""
