"""The course beside the library: budgets (``budgets``), each experiment's recipe (``experiments``), the
notebook set-up (``notebook``), training reports (``report``), stored results with provenance
(``results``), the runner (``runner``, ``python -m course run``), the learning-per-CPU-minute sweep
(``sweep``), what only the course evaluates (``evaluation``, ``accounting``, ``data_stats``,
``memory``), the analyses of Exp 1 (``architectures``, ``verdicts``), Exp 3 (``attention``), Exp 4
(``scaling``) and Exp 5 (``transfer``), what the benchmarks stored (``benchmarks``), and the closing
guidelines computed from all of them (``guidelines``, notebook 08). It imports
``reftx_lib``, never ``tools``. The names every notebook uses are importable from here.
"""

from reftx_lib.train.evaluation import source_ablation, source_use

from .accounting import flops_per_token, num_parameters
from .budgets import BUDGET_NAMES, get_budget
from .data_stats import corpus_stats, token_lengths, tokenizer_info
from .evaluation import (
    choose_decoding,
    continuation_quality,
    continue_texts,
    longest_3,
    repetition_rate,
    rouge_along_training,
    rouge_trend,
    score_summaries,
    source_use_along_training,
    summary_diversity,
    unigram_loss,
)
from .experiments import (
    build_model,
    equal_compute_steps,
    exp1_arms,
    exp1_layouts,
    exp1_model,
    exp1_settings,
    exp2_pretraining,
    exp2_settings,
    exp3_samsum_model,
    exp3_settings,
    exp4_model,
    exp4_settings,
    exp5_model,
    exp5_plan,
    exp5_settings,
    exp5_subsets,
    rawtext_data,
    samsum_baseline,
    samsum_data,
    samsum_warmup,
)
from .memory import training_memory_mb
from .notebook import setup_notebook
from .report import flattening_line, steady_step_seconds, training_report
from .results import load_results, stored_results_table, verdicts_beside
from .sweep import matmul_flops_per_s
