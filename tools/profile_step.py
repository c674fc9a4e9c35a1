"""Where a training step's time goes: ``python -m tools.profile_step --data samsum --size tiny``.

It runs the course's own loop (``reftx_lib.train.trainer.train``) on the course's own data at a budget's
settings for a steady stretch of steps, under ``torch.profiler``, and splits the wall time into the parts
an engineer can act on: matrix multiplies, attention (the SDPA kernel, softmax, masks), the output head
and loss, the optimizer (AdamW, zeroing, gradient clipping), data loading and collation (padding, the
split of packed rows), evaluation, checkpoint saving, other tensor work (norms, GELU, dropout, adds) and
Python and host overhead (the rest of the wall time). It prints the padding share of the computed tokens
and the run's share of this machine's fp32 matmul rate, measured in the same process.

Data, evaluation and saving are found by wrapping the trainer's own calls in ``record_function`` (the
library is not changed); an operator is charged to the innermost part that contains it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from course.budgets import get_budget
from course.experiments import SAMSUM, build_model, rawtext_data, samsum_data
from course.report import flops_per_supervised_token
from course.results import provenance, save_results
from course.sweep import gemm_rate, matmul_flops_per_s
from reftx_lib.data.tokenizer import load_tokenizer
from reftx_lib.train import checkpoint, trainer

PARTS = (
    "matmul",
    "attention",
    "head and loss",
    "optimizer",
    "data and collation",
    "evaluation",
    "checkpoint",
    "other tensor work",
    "Python and host",
)
# Regions the trainer's calls are wrapped in, by the part they are charged to.
REGIONS = {
    "reftx.data": "data and collation",
    "reftx.evaluation": "evaluation",
    "reftx.checkpoint": "checkpoint",
    "_HeadCrossEntropy": "head and loss",
    "Optimizer.step": "optimizer",
    "Optimizer.zero_grad": "optimizer",
    "clip_grad_norm": "optimizer",
}
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear")
ATTENTION = ("scaled_dot_product", "flash_attention", "softmax", "masked_fill", "tril", "triu")
HEAD = ("cross_entropy", "nll_loss", "log_softmax")


@contextmanager
def _wrapped(module, name: str, region: str):
    """Run ``module.name`` inside ``record_function(region)`` for the duration of the block."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        with record_function(region):
            return original(*args, **kwargs)

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def _part_of(event, parents: dict) -> str:
    """The part an operator's self time is charged to: its innermost region, else its own kind."""
    node = event
    while node is not None:
        part = next((part for key, part in REGIONS.items() if key in node.name), None)
        if part is not None:
            return part
        node = parents.get(id(node))
    name = event.name.split(": ", 1)[-1].lower()  # a backward op is named after its forward op
    if name.startswith(MATMUL) or any(m in name for m in ("mmbackward", "addmmbackward", "bmmbackward")):
        return "matmul"
    if any(a in name for a in ATTENTION):
        return "attention"
    if any(h in name for h in HEAD):
        return "head and loss"
    return "other tensor work"


def split_time(prof, wall_s: float) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Seconds per part (every CPU operator's self time charged to its part, the rest of the wall time to
    Python and host), and the seconds of each part's operators by name."""
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]
    parents = {id(child): e for e in events for child in e.cpu_children}
    seconds: dict[str, float] = defaultdict(float)
    by_op: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in events:
        part = _part_of(e, parents)
        seconds[part] += e.self_cpu_time_total / 1e6
        by_op[part][e.name] += e.self_cpu_time_total / 1e6
    seconds["Python and host"] = max(0.0, wall_s - sum(seconds.values()))
    return {part: seconds.get(part, 0.0) for part in PARTS}, by_op


def _data(args, settings: dict, tokenizer):
    if args.data == "samsum":
        data, _ = samsum_data(settings["samsum"], tokenizer)
        return data, "encdec"
    data, _ = rawtext_data(settings["rawtext"], tokenizer, "documents")
    return data, "deconly"


def main(argv: list[str] | None = None) -> int:
    """Profile a fresh run of ``--steps`` steps after a ``--warmup`` run; print the table (and JSON)."""
    p = argparse.ArgumentParser(prog="python -m tools.profile_step", description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("samsum", "textbooks"), default="samsum")
    p.add_argument("--size", default="tiny")
    p.add_argument("--budget", default="full", help="the budget whose batch, lr and data settings are used")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=None, help="default: the budget's")
    p.add_argument("--top", type=int, default=4, help="operators named per part")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--save", metavar="NAME", help="store the report as results/profile/NAME.json, with provenance"
    )
    args = p.parse_args(argv)
    settings = get_budget(args.budget)
    section = settings["samsum" if args.data == "samsum" else "rawtext"]
    tok = load_tokenizer(settings["data"]["vocab_size"])
    data, kind = _data(args, settings, tok)
    dropout = settings["samsum"]["dropout"]
    model = build_model(kind, args.size, len(tok), seed=0, dropout=dropout)
    eval_every = args.eval_every or section["eval_every"]
    config = trainer.TrainConfig(
        max_steps=section["max_steps"],
        lr=settings["samsum"]["lr"],
        warmup_steps=settings["samsum"]["warmup_steps"],
        batch_tokens=section["batch_tokens"],
        eval_every=eval_every,
        eval_batches=section["eval_batches"],
        progress=False,
        **(SAMSUM if args.data == "samsum" else {}),  # batched as the course's SAMSum recipes are
    )
    warm = trainer.TrainConfig(**{**config.__dict__, "stop_after": args.warmup})
    trainer.train(model, data["train"], data["validation"], warm)  # caches, allocator, thread pools
    config.stop_after = args.steps
    peak = matmul_flops_per_s()
    with (
        _wrapped(trainer, "pad_batch", "reftx.data"),
        _wrapped(trainer, "training_inputs", "reftx.data"),
        _wrapped(trainer, "counted_targets", "reftx.data"),
        _wrapped(trainer, "evaluate_loss", "reftx.evaluation"),
        _wrapped(checkpoint, "save_checkpoint", "reftx.checkpoint"),
        _wrapped(torch.nn.utils, "clip_grad_norm_", "clip_grad_norm"),
    ):
        model2 = build_model(kind, args.size, len(tok), seed=0, dropout=dropout)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            trainer.train(model2, data["train"], data["validation"], config)
            wall = time.perf_counter() - start
    seconds, by_op = split_time(prof, wall)
    model3 = build_model(kind, args.size, len(tok), seed=0, dropout=dropout)
    start = time.perf_counter()  # the same steps again without the profiler: the share is timed here
    plain = trainer.train(model3, data["train"], data["validation"], config)
    plain_wall = time.perf_counter() - start
    last, steps = plain[-1], len(plain)
    flops = flops_per_supervised_token(model3, data["train"]["input_ids"])
    share = flops * last["supervised_tokens"] / plain_wall / peak
    report = {
        "data": args.data,
        "size": args.size,
        "budget": args.budget,
        "steps": steps,
        "wall_s": plain_wall,
        "profiled_wall_s": wall,
        "seconds": seconds,
        "padding_share": last["padding_waste"],
        "supervised_tokens_per_s": last["supervised_tokens"] / plain_wall,
        "flops_per_supervised_token": flops,
        "matmul_peak_flops_per_s": peak,
        "of_matmul_peak": share,
        "threads": torch.get_num_threads(),
    }
    threads = torch.get_num_threads()
    print(
        f"{args.data}, {args.size}, budget {args.budget}: {steps} steps in {plain_wall:.1f} s, "
        f"{wall:.1f} s under the profiler ({threads} threads); shares of the profiled time:"
    )
    for part in PARTS:
        top = sorted(by_op.get(part, {}).items(), key=lambda kv: -kv[1])[: args.top]
        ops = ", ".join(f"{name} {t / wall:.1%}" for name, t in top if t / wall >= 0.005)
        print(f"  {part:<20} {seconds[part]:7.2f} s  {seconds[part] / wall:6.1%}  {ops}")
    print(f"  padding share of computed tokens {last['padding_waste']:.1%}")
    print(
        f"  {report['supervised_tokens_per_s']:,.0f} supervised tokens/s x {flops / 1e6:.2f} MFLOP = "
        f"{share:.1%} of the measured matmul rate ({peak / 1e9:.0f} GFLOP/s)"
    )
    d, rows = model2.config.d_model, section["batch_tokens"]
    shapes = {"(tokens, D) @ (D, 4D)": (rows, d, 4 * d), "(tokens, 4D) @ (4D, D)": (rows, 4 * d, d)}
    shapes["(tokens, D) @ (D, V)"] = (rows // 4, d, model2.config.vocab_size)
    report["gemm_rates"] = {name: gemm_rate(*shape, seconds=0.5) for name, shape in shapes.items()}
    for name, rate in report["gemm_rates"].items():
        print(f"  {name:<24} {rate / 1e9:6.0f} GFLOP/s, {rate / peak:.0%} of the measured matmul rate")
    if args.json:
        print(json.dumps(report))
    if args.save:
        prov = provenance(args.budget, torch.device("cpu"), vars(args), plain_wall)
        print(f"saved {save_results('profile', args.save, report, prov)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
