"""Lab equipment beside the course, never imported by ``reftx_lib`` or by a notebook: the benchmarks of
our models against their Hugging Face peers (``peers`` builds them; ``timing`` times steps and ``generate``
calls in counterbalanced order; ``speed`` turns the times into rows; ``learning`` asks whether a step of
ours teaches as much as the peer's). Run them with ``python -m tools`` (speed) or
``python -m tools --learning``; they store ``results/bench/*.json``, which the notebooks read through
``course.benchmarks``.
"""
