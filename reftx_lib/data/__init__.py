"""From files to token batches: ``corpora`` (SAMSum, the textbooks, TinyStories: local copy or Hub),
``tokenizer`` (the course's byte-level BPE, cached), ``preprocessing`` (rows in each experiment's layout)
and ``batching``. It imports ``constants`` and ``paths``, never ``model``: data never depends on the
network that reads it."""
