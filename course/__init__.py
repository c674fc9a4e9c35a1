"""The course beside the library: budgets (``budgets``), each experiment's recipe (``experiments``), the
notebook set-up (``notebook``), training reports (``report``), stored results with provenance
(``results``), the runner (``runner``, ``python -m course run``), the learning-per-CPU-minute sweep
(``sweep``), the analyses of Exp 1 (``architectures``, ``verdicts``, ``memory``), Exp 4 (``scaling``) and
Exp 5 (``transfer``), and what the benchmarks stored (``benchmarks``). It imports ``reftx_lib``, never
``tools``.
"""
