"""What the experiments compute from trained models: ``architectures`` (the arms of Exp 1 compared
on the same tokens, at equal steps, wall-clock, parameters and targets), ``attention`` (extraction,
statistics, plots and the explorer, one module each; Exp 3), ``scaling`` (power-law fits of loss
against size; Exp 4), ``transfer`` (a decoder-only model turned into an encoder-decoder, and its
controls; Exp 5) and ``verdicts`` (a predicted range judged against every seed's measurement;
Exp 1). It imports ``model``, ``data`` and ``train``, never ``course`` or ``bench``.
"""
