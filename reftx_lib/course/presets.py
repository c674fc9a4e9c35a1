"""Course presets: how big each experiment is at ``smoke`` (CI), ``cpu`` (a laptop) and ``gpu`` (one H100).

Every notebook reads its section of ``COURSE_PRESETS[PRESET]``, so the same
notebook is a 60-second CI check, a lesson-sized laptop run, or the full-scale
experiment. Model sizes refer to ``reftx_lib.model.config.MODEL_PRESETS``.
"""
from __future__ import annotations

import copy
import os

PRESET_NAMES = ("smoke", "cpu", "gpu")

# SAMSum baseline hyperparameters (notebook 01); Exp 1 reuses them on raw text.
_SAMSUM = {
    "smoke": dict(model="smoke", max_steps=30, batch_tokens=2048, lr=2e-3, warmup_steps=5, eval_every=15,
                  eval_batches=2, max_source_len=256, max_target_len=64, n_test=16, num_beams=1,
                  max_new_tokens=32, dropout=0.1),
    "cpu": dict(model="tiny", max_steps=500, batch_tokens=4096, lr=2e-3, warmup_steps=50, eval_every=100,
                eval_batches=10, max_source_len=384, max_target_len=64, n_test=200, num_beams=4,
                max_new_tokens=48, dropout=0.1),
    "gpu": dict(model="small", max_steps=4000, batch_tokens=32768, lr=1e-3, warmup_steps=300, eval_every=500,
                eval_batches=None, max_source_len=512, max_target_len=96, n_test=819, num_beams=4,
                max_new_tokens=64, dropout=0.1),
}

COURSE_PRESETS: dict[str, dict[str, dict]] = {
    name: {
        "data": dict(vocab_size=8192),
        "samsum": _SAMSUM[name],
        # Exp 1 / Exp 2: raw text (textbooks); documents chunked to max_doc_tokens, split at the midpoint.
        # cpu trains 200 steps so notebook 02 (one run, ~3.5 min) and 03 (three runs, ~9 min) fit the course budget;
        # n_samples prompts are printed, n_generate feed the automatic repetition proxy of Exp 1.
        "rawtext": {
            "smoke": dict(model="smoke", max_steps=30, batch_tokens=2048, max_doc_tokens=126, n_train_docs=300,
                          n_eval_docs=40, eval_every=15, eval_batches=2, block_size=128, n_samples=2,
                          sample_tokens=24, n_generate=8),
            "cpu": dict(model="tiny", max_steps=200, batch_tokens=4096, max_doc_tokens=254, n_train_docs=None,
                        n_eval_docs=200, eval_every=40, eval_batches=10, block_size=256, n_samples=3,
                        sample_tokens=48, n_generate=48),
            "gpu": dict(model="small", max_steps=3000, batch_tokens=32768, max_doc_tokens=510, n_train_docs=None,
                        n_eval_docs=None, eval_every=500, eval_batches=None, block_size=512, n_samples=4,
                        sample_tokens=96, n_generate=200),
        }[name],
        # Exp 3: attention statistics over held-out examples per corpus.
        "attention": dict(n_examples={"smoke": 100, "cpu": 200, "gpu": 500}[name]),
        # Exp 4: the scaling ladder (sizes by MODEL_PRESETS name, or explicit overrides). Every size trains
        # the same steps x batch_tokens with the SAMSum baseline's lr, warmup, dropout and length caps.
        # cpu adds two in-between widths so the three-parameter law has more sizes than parameters.
        "scaling": {
            "smoke": dict(sizes=["smoke", "mini"], seeds=[0, 1], max_steps=20, batch_tokens=2048,
                          n_test=8, eval_batches=2, eval_every=10),
            "cpu": dict(sizes=["smoke", dict(name="d48L1", d_model=48, n_layers=1, n_heads=4), "mini",
                               dict(name="d96L2", d_model=96, n_layers=2, n_heads=4), "tiny"],
                        seeds=[0, 1], max_steps=300, batch_tokens=2048, n_test=50, eval_batches=10,
                        eval_every=50),
            "gpu": dict(sizes=["tiny", "small", "medium", "large"], seeds=[0, 1], max_steps=3000,
                        batch_tokens=32768, n_test=819, eval_batches=None, eval_every=500),
        }[name],
        # Exp 5: transfer from raw-text pretraining, fine-tuned at two data fractions. The pretrained model, its
        # size and its steps are Exp 2's run (the "rawtext" section); this section sets only the fine-tuning.
        # ``variants`` (optional, by str(fraction)) limits which initializations run at a fraction.
        "transfer": {
            "smoke": dict(finetune_steps=20, fractions=[0.1, 1.0], batch_tokens=2048, n_test=8, eval_batches=2,
                          eval_every=10),
            "cpu": dict(finetune_steps=150, fractions=[0.1, 1.0], batch_tokens=2048, n_test=50, eval_batches=10,
                        eval_every=25, variants={"1.0": ["scratch", "transfer"]}),
            "gpu": dict(finetune_steps=2000, fractions=[0.1, 1.0], batch_tokens=32768, n_test=819,
                        eval_batches=None, eval_every=250),
        }[name],
    }
    for name in PRESET_NAMES
}


def get_preset(name: str | None = None) -> dict[str, dict]:
    """The course preset ``name`` (default: env ``REFTX_PRESET``, else ``cpu``), as a fresh copy."""
    name = name or os.environ.get("REFTX_PRESET", "cpu")
    if name not in COURSE_PRESETS:
        raise ValueError(f"unknown course preset {name!r}; allowed values: {list(PRESET_NAMES)} "
                         "(set REFTX_PRESET or pass --preset)")
    return copy.deepcopy(COURSE_PRESETS[name])
