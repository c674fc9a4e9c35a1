"""Course budgets: how big each experiment is at ``smoke`` (CI), ``cpu`` (a laptop lesson), ``full`` (the
committed run: every model trained until its validation curve flattens, sized for two CPU cores) and ``gpu``
(one H100), and the dry run of each (``gpu-dry``: its shapes for two steps).

Every notebook reads its section of ``BUDGETS[BUDGET]``, so the same
notebook is a 60-second CI check, a lesson-sized laptop run, the converged run the
committed notebooks show, or the GPU-scale experiment. ``full`` takes its batch size (2048
tokens), learning rate (2e-3) and vocabulary (8192) from the sweep of notebook 00, section 9
(``results/sweep/cpu.json``): the settings that learn most per CPU-minute. Its raw-text context is the
sweep's 128 tokens, which learned as much per CPU-minute as 256 (within the seed noise), because at 256
Exp 1's encoder-decoder did not flatten (see the ``rawtext`` table).
Model sizes refer to ``reftx_lib.model.config.MODEL_SIZES``.
"""

from __future__ import annotations

import copy
import os

BUDGET_NAMES = ("smoke", "cpu", "full", "gpu")
# ``<budget>-dry``: the budget's model sizes and sequence shapes, with every count cut to
# the least that still runs each code path (two training steps, one evaluation batch, two test
# examples), so a budget that has never run (``gpu``) can be tried on a CPU first.
DRY_RUN = dict(
    max_steps=2,
    finetune_steps=2,
    warmup_steps=1,
    eval_every=1,
    eval_batches=1,
    n_test=2,
    n_eval_docs=20,
    n_generate=2,
    n_samples=1,
    n_examples=4,
    n_decode_val=2,
    keep_every=1,
)
# A dry run also caps the tokens of a training batch: the gpu budget's 32,768-token batches of Exp 4's
# ``large`` model need more than a 24 GiB CPU machine holds (its first gpu-dry run, 2026-11-30, was
# killed for memory at 24 GB). Memory at the real batch is the GPU's to show (scripts/device_check.sh).
DRY_RUN_MAX_BATCH_TOKENS = 8192
BUDGET_CHOICES = BUDGET_NAMES + tuple(f"{name}-dry" for name in BUDGET_NAMES)


def _by_budget(**settings: tuple) -> dict[str, dict]:
    """``setting=(smoke, cpu, full, gpu)`` rows -> one dict per budget: a table read across the budgets."""
    for key, values in settings.items():
        if len(values) != len(BUDGET_NAMES):
            raise ValueError(
                f"budget setting {key!r} has {len(values)} values; give one per budget {BUDGET_NAMES}"
            )
    return {name: {key: values[i] for key, values in settings.items()} for i, name in enumerate(BUDGET_NAMES)}


# fmt: off
# SAMSum baseline hyperparameters (notebook 02). At full: the seed's Tiny size trained by epochs (an epoch
# is about 703 steps of 4096 tokens), after a reading warm-up of ``warmup_steps_reading`` steps that copies
# stretches of ``warmup_window`` tokens of the training dialogues (``course.experiments.samsum_warmup``):
# without it the model learned a language model of summaries and did not read its dialogue (issue 30,
# docs/reading.md). ``plain_stop_after``: the same schedule without the warm-up, stopped there, notebook
# 02's contrast. Exp 1 reuses the optimisation on raw text.
_SAMSUM = _by_budget(
    #                      smoke    cpu     full    gpu
    model=                ("nano",  "tiny", "tiny", "small"),
    max_steps=            (30,      1400,   4200,   8000),
    batch_tokens=         (2048,    4096,   4096,   32768),
    lr=                   (2e-3,    2e-3,   2e-3,   1e-3),
    warmup_steps=         (5,       50,     100,    300),
    eval_every=           (15,      350,    350,    500),
    eval_batches=         (2,       10,     20,     None),
    keep_every=           (15,      700,    700,    1000),
    warmup_steps_reading= (10,      350,    1400,   2000),
    warmup_window=        (16,      48,     48,     48),
    warmup_random_start=  (True,    True,   True,   True),
    plain_stop_after=     (30,      700,    2100,   4000),
    max_source_len=       (256,     384,    384,    512),
    max_target_len=       (64,      64,     64,     96),
    n_test=               (16,      200,    819,    819),
    n_gate_test=          (16,      100,    200,    819),
    n_decode_val=         (8,       50,     200,    400),
    num_beams=            (1,       4,      4,      4),
    max_new_tokens=       (32,      48,     48,     64),
    dropout=              (0.1,     0.1,    0.1,    0.1),
)

# Exp 1's arms (course.experiments.EXP1_ARMS). full leaves out the parameter-matched decoder-only
# arm (12 min at mini), so that notebook 04 trains within its hour and the course within 150 minutes; its
# question (does the gap stay at equal parameters?) is answered by the cpu and gpu runs.
_ARMS = ["encdec", "deconly", "deconly_matched", "prefix_lm"]
_ARMS_UNMATCHED = ["encdec", "deconly", "prefix_lm"]

# Exp 1 / Exp 2: raw text (textbooks); documents chunked to max_doc_tokens, split at the midpoint. Both
# experiments train the section's model for max_steps, with the SAMSum baseline's optimisation. At full the
# tiny model had not flattened after 1200 steps (last-quarter falls of 2.1-2.6%), and training it longer
# would not fit Exp 1's runs into one notebook's hour; mini, trained twice as many steps in about 1.2x the
# time, reaches the same validation loss (Exp 2: 3.958 against 3.953) and flattens (1.7%). So full shrinks
# the model, not the training. On 254-token chunks of all 5070 training documents the encoder-decoder still
# did not flatten: last-quarter falls of 2.01/1.95% at 2400 steps and 2.06/2.32% at 3000 (seeds 0/1; the
# cosine decay stretches with the run). Probes of it at 3000 steps (2026-11-30, 1 thread each; falls at
# seed 1 unless said): 126-token chunks 2.21%; a quarter of the documents 1.67% (254 tokens); 126 tokens and
# half the documents 2.07/2.02% (seeds 0/1); 126 tokens and a quarter 1.94/1.12%. So full shrinks the
# context to 126-token chunks (128 with [BOS]/[SEP] and [EOS]: the sweep's 128, as good as 256 per
# CPU-minute) and the corpus to the first 1267 training documents (a quarter: 0.93M tokens, the first
# textbooks in the corpus's file order; 3000 steps of 2048 tokens read it 6.36 times, notebook 03). Its
# models are worse for it (the encoder-decoder's validation loss 4.30-4.34 against 4.18-4.23) and
# data-limited: their training loss ends far below the validation loss.
# n_samples prompts are printed, n_generate feed the automatic repetition proxy of Exp 1; Exp 1 trains its
# encoder-decoder and decoder-only arms at every seed of ``seeds`` (its perplexity ratio's spread), and the
# other ``arms`` at the first seed.
_RAWTEXT = _by_budget(
    #                 smoke    cpu     full    gpu
    model=           ("nano",  "tiny", "mini", "small"),
    max_steps=       (30,      200,    3000,   3000),
    batch_tokens=    (2048,    4096,   2048,   32768),
    max_doc_tokens=  (126,     254,    126,    510),
    n_train_docs=    (300,     None,   1267,   None),
    n_eval_docs=     (40,      200,    200,    None),
    eval_every=      (15,      40,     150,    500),
    eval_batches=    (2,       10,     20,     None),
    block_size=      (128,     256,    128,    512),
    n_samples=       (2,       3,      3,      4),
    sample_tokens=   (24,      48,     48,     96),
    n_generate=      (8,       48,     48,     200),
    seeds=           ([0, 1],  [0],    [0, 1], [0, 1]),
    arms=            (_ARMS,   _ARMS,  _ARMS_UNMATCHED, _ARMS),
)

# Exp 3: attention statistics over held-out examples per corpus.
_ATTENTION = _by_budget(n_examples=(40, 200, 200, 500))

# Exp 4: the scaling ladder (sizes by MODEL_SIZES name, or explicit overrides). Every size trains the same
# steps x batch_tokens with the SAMSum baseline's lr, warmup, dropout and length caps. cpu adds two
# in-between widths so the three-parameter law has more sizes than parameters.
_SCALING = _by_budget(
    sizes=(
        ["nano", "mini"],
        ["nano", dict(name="d48L1", d_model=48, n_layers=1, n_heads=4), "mini",
         dict(name="d96L2", d_model=96, n_layers=2, n_heads=4), "tiny"],
        ["mini", "tiny", "small"],
        ["tiny", "small", "medium", "large"],
    ),
    #                 smoke    cpu     full    gpu
    seeds=           ([0, 1],  [0, 1], [0, 1], [0, 1]),
    max_steps=       (20,      300,    600,    3000),
    batch_tokens=    (2048,    2048,   2048,   32768),
    n_test=          (8,       50,     200,    819),
    eval_batches=    (2,       10,     20,     None),
    eval_every=      (10,      50,     50,     500),
)

# Exp 5: transfer from raw-text pretraining, fine-tuned at two data fractions. The pretrained model, its size
# and its steps are Exp 2's run (the "rawtext" section); this section sets only the fine-tuning.
# ``variants`` (by str(fraction); empty: all of TRANSFER_VARIANTS and the equal-compute control) limits which
# initializations run at a fraction; at the smallest fraction scratch and transfer run at every seed of
# ``seeds`` (the noise estimate). full runs the controls the verdicts need (scratch, transfer, the embedding
# alone, equal compute) and leaves the part-by-part ablations to the cpu run: 7 runs of 600 steps and one
# equal-compute run of 3000 (at Exp 2's mini size), at 10% of the data, where transfer is expected to matter
# most. The equal-compute run at 100% (11 min) is left to cpu and gpu so that the course fits 150 minutes.
_FULL_VARIANTS = {
    "0.1": ["scratch", "transfer", "embedding_only", "scratch_equal_compute"],
    "1.0": ["scratch", "transfer"],
}
_TRANSFER = _by_budget(
    #                 smoke       cpu         full        gpu
    finetune_steps=  (20,         150,        600,        2000),
    fractions=       ([0.1, 1.0], [0.1, 1.0], [0.1, 1.0], [0.1, 1.0]),
    seeds=           ([0, 1],     [0, 1],     [0, 1],     [0, 1]),
    batch_tokens=    (2048,       2048,       2048,       32768),
    n_test=          (8,          50,         200,        819),
    eval_batches=    (2,          10,         20,         None),
    eval_every=      (10,         25,         50,         250),
    variants=        ({"1.0": ["scratch", "transfer"]},
                      {"1.0": ["scratch", "transfer", "scratch_equal_compute"]},
                      _FULL_VARIANTS,
                      {}),
)
# fmt: on

BUDGETS: dict[str, dict[str, dict]] = {
    name: {
        "data": dict(vocab_size=8192),
        "samsum": _SAMSUM[name],
        "rawtext": _RAWTEXT[name],
        "attention": _ATTENTION[name],
        "scaling": _SCALING[name],
        "transfer": _TRANSFER[name],
    }
    for name in BUDGET_NAMES
}


def get_budget(name: str | None = None) -> dict[str, dict]:
    """The course budget ``name`` (default: env ``REFTX_BUDGET``, else ``cpu``), as a fresh copy."""
    name = name or os.environ.get("REFTX_BUDGET", "cpu")
    if name not in BUDGET_CHOICES:
        raise ValueError(
            f"unknown course budget {name!r}; allowed values: {list(BUDGET_CHOICES)} "
            "(set REFTX_BUDGET or pass --budget)"
        )
    base, dry = name.removesuffix("-dry"), name.endswith("-dry")
    budget = copy.deepcopy(BUDGETS[base])
    if dry:
        for section in budget.values():
            section.update({k: v for k, v in DRY_RUN.items() if k in section})
            if "batch_tokens" in section:
                section["batch_tokens"] = min(section["batch_tokens"], DRY_RUN_MAX_BATCH_TOKENS)
    return budget
