"""What the experiments compute from trained models: ``attention`` (extraction, statistics, plots and
the explorer, one module each; Exp 3), ``scaling`` (power-law fits of loss against size; Exp 4) and
``transfer`` (a decoder-only model turned into an encoder-decoder; Exp 5). It imports ``model``,
``data`` and ``train``, never ``course`` or ``bench``.
"""
