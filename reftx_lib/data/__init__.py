"""From files to token batches: ``corpora`` (SAMSum, the textbooks, TinyStories, from the local
copy or the Hub, with their splits), ``tokenizer`` (the course's one byte-level BPE, cached),
``preprocessing`` (rows in each experiment's layout: packed, midpoint split, documents) and
``batching`` (padding and token-budget batches). It imports ``reftx_lib.constants`` and
``reftx_lib.paths`` but nothing from ``model``: data never depends on the network that reads it.
"""
