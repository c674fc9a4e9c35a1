"""Benchmarks of our models against their Hugging Face peers: ``peers`` builds the peers (GPT-2, MBart)
and a matched pair of ours and the peer; ``timing`` times training steps and ``generate`` calls
in counterbalanced order and holds the statistics (paired ratios, the median's confidence interval);
``speed`` turns those times into result rows (training, generation, the trainer on real data) and
prints their table; ``cli`` is the command line ``python -m reftx_lib bench``; ``learning`` is the
learning-parity benchmark (``bench --learning``: does a step of ours teach as much as the peer's).
The package may import ``reftx_lib.model``, ``data``, ``train`` and ``course`` and the Hugging Face
peers (``transformers``); of reftx_lib only the command line (``reftx_lib.__main__``) imports it.
No names are re-exported here.
"""
