"""Learning per CPU-minute: which settings teach a course model the most in a fixed training time?

The course runs on a laptop-sized CPU, so its budget is training *time*, not steps. This
sweep trains Exp 2's decoder-only model on the textbook blocks for the same number of
seconds at each point and compares the validation loss each reaches. It moves one factor at
a time away from a base point: the learning rate, the batch size in tokens, the context
(block) length, and the vocabulary size (the course's 8192-token BPE against a smaller one
trained on the same corpora).

- Each point sets its own number of steps so that its cosine schedule ends at the time
  budget: a short probe times a few training steps first. A point that takes larger or
  longer batches therefore takes fewer steps.
- Losses of tokenizers with different vocabularies are per token of *different* tokens, so the
  comparison is in **bits per byte** of validation text: nats per token / ln 2 x tokens per byte.
- The base point runs with two seeds; their difference is the noise a choice must exceed.
- Every point reports its training tokens/s and the fraction of this CPU's measured fp32
  matmul rate (``matmul_flops_per_s``) that its model FLOPs reach.

Run: ``python -m course sweep --save cpu``; the result goes to ``results/sweep/<name>.json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

from course.accounting import flops_per_token, num_parameters
from course.experiments import build_model, rawtext_data
from reftx_lib.data.batching import pad_batch, token_budget_batches
from reftx_lib.data.corpora import load_corpus
from reftx_lib.data.tokenizer import load_tokenizer
from reftx_lib.model.config import MODEL_SIZES
from reftx_lib.model.transformer import BaseLanguageModel
from reftx_lib.train.loss import training_loss
from reftx_lib.train.step import autocast_for, training_inputs, training_step
from reftx_lib.train.trainer import TrainConfig, train

BASE = {"lr": 2e-3, "batch_tokens": 4096, "block_size": 256, "vocab_size": 8192}
AXES = {
    "lr": [5e-4, 1e-3, 4e-3],
    "batch_tokens": [2048, 8192],
    "block_size": [128, 512],
    "vocab_size": [4096],
}


@dataclass
class SweepSetup:
    """What every point shares: the model size, the time budget and the data."""

    size: str = "tiny"
    seconds: float = 180.0  # training time per point (evaluation not counted)
    dropout: float = 0.1
    n_train_docs: int | None = None  # None: every training document
    n_eval_docs: int = 200
    noise_seeds: tuple[int, ...] = (0, 1)  # the base point runs once per seed; the others on the first
    n_evals: int = 8  # evaluations per point, evenly spaced

    def __post_init__(self) -> None:
        if self.size not in MODEL_SIZES:
            raise ValueError(f"unknown size {self.size!r}; allowed values: {sorted(MODEL_SIZES)}")
        if not self.seconds > 0:
            raise ValueError(f"seconds must be positive, got {self.seconds}")
        if not self.noise_seeds:
            raise ValueError("noise_seeds must name at least one seed")
        self.noise_seeds = tuple(self.noise_seeds)


def sweep_points(
    base: dict | None = None, axes: dict | None = None, seeds: tuple[int, ...] = (0, 1)
) -> list[dict]:
    """The base point once per seed, then every other value of each axis with the base elsewhere
    (default: ``BASE`` and ``AXES``)."""
    base, axes = base or BASE, axes or AXES
    unknown = sorted(set(axes) - set(base))
    if unknown:
        raise ValueError(f"sweep axes {unknown} have no base value; base settings: {sorted(base)}")
    points = [{"axis": "base", "seed": seed, **base} for seed in seeds]
    for axis, values in axes.items():
        points += [{"axis": axis, "seed": seeds[0], **base, axis: v} for v in values if v != base[axis]]
    return points


def tokens_per_byte(tokenizer, texts: list[str]) -> float:
    """Tokens (with the [BOS] and [EOS] each document gets in a block) per UTF-8 byte of ``texts``."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) + 2 for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return n_tokens / n_bytes


def gemm_rate(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """FLOP/s of one (m, k) @ (k, n) float32 matmul on this CPU, with torch's current thread count."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ b
        count += 1
    return 2 * m * k * n * count / elapsed


def matmul_flops_per_s(n: int = 512, seconds: float = 1.0) -> float:
    """This CPU's fp32 matmul rate (FLOP/s) on an n x n product: the ceiling a model's training could
    reach if it were nothing but large matrix multiplies."""
    return gemm_rate(n, n, n, seconds)


def run_point(point: dict, setup: SweepSetup) -> dict:
    """Train one point for ``setup.seconds`` of training time; its curve in nats and bits per byte."""
    tok = load_tokenizer(point["vocab_size"])
    cfg = {
        "n_train_docs": setup.n_train_docs,
        "n_eval_docs": setup.n_eval_docs,
        "block_size": point["block_size"],
    }
    data, _ = rawtext_data(cfg, tok, "blocks")
    val_texts = load_corpus("textbooks")["validation"]["text"][: setup.n_eval_docs]
    per_byte = tokens_per_byte(tok, val_texts) / math.log(2)  # bits per byte = nats per token x this
    model = build_model(
        "deconly",
        setup.size,
        len(tok),
        seed=point["seed"],
        dropout=setup.dropout,
        max_len=point["block_size"],
    )
    rows = data["train"]["input_ids"]
    probe = token_budget_batches(
        [len(r) for r in rows], point["batch_tokens"], shuffle=True, seed=point["seed"]
    )
    seconds = [step_seconds(model, [rows[i] for i in index], torch.device("cpu")) for index in probe[:4]]
    steps = max(10, int(setup.seconds / statistics.median(seconds[1:])))  # the first step warms up
    config = TrainConfig(
        max_steps=steps,
        lr=point["lr"],
        warmup_steps=max(1, steps // 10),
        batch_tokens=point["batch_tokens"],
        eval_every=max(1, steps // setup.n_evals),
        eval_batches=None,
        seed=point["seed"],
        device="cpu",
        progress=False,
    )
    history = train(model, data["train"], data["validation"], config)
    evals = history.evals()
    tokens_per_s = history[-1]["tokens"] / history[-1]["wall_time"]
    flops_per_s = flops_per_token(model, point["block_size"]) * tokens_per_s
    return {
        **point,
        "steps": steps,
        "train_seconds": round(history[-1]["wall_time"], 1),
        "tokens": history[-1]["tokens"],
        "tokens_per_s": round(tokens_per_s, 1),
        "model_flops_per_s": flops_per_s,
        "bits_per_byte_per_nat": per_byte,
        "curve": [[r["step"], round(r["wall_time"], 2), round(r["val_loss"], 5)] for r in evals],
        "val_loss": round(evals[-1]["val_loss"], 5),
        "bits_per_byte": round(evals[-1]["val_loss"] * per_byte, 5),
        "parameters": num_parameters(model)["total"],
    }


def _point_job(task: tuple) -> dict:
    """One point in a fresh worker process with its own thread count."""
    point, setup, threads = task
    torch.set_num_threads(threads)
    return run_point(point, setup)


def _base(points: list[dict]) -> tuple[list[dict], float, float | None]:
    """The base points, their mean bits per byte, and their seed range (None with one seed)."""
    base = [p for p in points if p["axis"] == "base"]
    values = [p["bits_per_byte"] for p in base]
    return base, statistics.mean(values), (max(values) - min(values) if len(values) > 1 else None)


def verdicts(metrics: dict) -> list[str]:
    """Per axis, the value that reached the lowest bits per byte, judged against the seed noise of the base.

    A value beats the base only if its gain exceeds twice the base's seed difference; otherwise the
    sweep cannot tell them apart and the base stays.
    """
    points = metrics["points"]
    base, base_bpb, noise = _base(points)
    noise_text = (
        f"seed noise {noise:.4f} bits/byte (base at seeds {[p['seed'] for p in base]})"
        if noise is not None
        else "no seed noise measured (one base seed): every difference is unjudged"
    )
    lines = [f"base {_settings(base[0])}: {base_bpb:.4f} bits/byte; {noise_text}"]
    for axis in dict.fromkeys(p["axis"] for p in points if p["axis"] != "base"):
        tried = sorted([p for p in points if p["axis"] == axis], key=lambda p: p["bits_per_byte"])
        best = tried[0]
        gain = base_bpb - best["bits_per_byte"]
        values = ", ".join(
            f"{p[axis]:g}: {p['bits_per_byte']:.4f}" for p in sorted(tried, key=lambda p: p[axis])
        )
        if gain <= 0:
            verdict = f"no {axis} tried beats the base ({base[0][axis]:g})"
        elif noise is None:
            verdict = f"best {axis} = {best[axis]:g} gains {gain:.4f} bits/byte: unjudged without seed noise"
        elif gain > 2 * noise:
            verdict = (
                f"{axis} = {best[axis]:g} beats the base ({base[0][axis]:g}) by {gain:.4f} bits/byte, "
                "over twice the noise"
            )
        else:
            verdict = (
                f"best {axis} = {best[axis]:g} gains {gain:.4f} bits/byte, within twice the noise: "
                f"keep {base[0][axis]:g}"
            )
        lines.append(f"{verdict} [{values}]")
    return lines


def headline(metrics: dict) -> dict:
    """The numbers the README's results table shows: the base, its noise, and the best point."""
    points = metrics["points"]
    base, base_bpb, noise = _base(points)
    best = min(points, key=lambda p: p["bits_per_byte"])
    return {
        "base_bits_per_byte": base_bpb,
        "seed_noise": noise or 0.0,
        "best": "base" if best["axis"] == "base" else f"{best['axis']} {best[best['axis']]:g}",
        "best_bits_per_byte": best["bits_per_byte"],
        "base_tokens_per_s": statistics.mean(p["tokens_per_s"] for p in base),
        "base_matmul_peak_fraction": statistics.mean(p["matmul_peak_fraction"] for p in base),
    }


def _settings(point: dict) -> str:
    return ", ".join(f"{k} {point[k]:g}" for k in BASE)


def plot_sweep(metrics: dict):
    """Left: bits per byte against training seconds for every point. Right: final bits per byte per
    axis value, the base drawn with its seed range."""
    import matplotlib.pyplot as plt

    points = metrics["points"]
    axes_names = list(dict.fromkeys(p["axis"] for p in points if p["axis"] != "base"))
    fig, axes = plt.subplots(1, 1 + len(axes_names), figsize=(4.2 * (1 + len(axes_names)), 3.6))
    base = [p for p in points if p["axis"] == "base"]
    for i, p in enumerate(points):
        label = "base" if p["axis"] == "base" else f"{p['axis']} {p[p['axis']]:g}"
        axes[0].plot(
            [c[1] for c in p["curve"]],
            [c[2] * p["bits_per_byte_per_nat"] for c in p["curve"]],
            color="black" if p["axis"] == "base" else f"C{i % 10}",
            label=f"{label} (seed {p['seed']})" if p["axis"] == "base" else label,
        )
    axes[0].set(xlabel="training seconds", ylabel="validation bits per byte", title="learning per CPU-second")
    axes[0].legend(fontsize=7)
    base_mean = statistics.mean(p["bits_per_byte"] for p in base)
    lo, hi = min(p["bits_per_byte"] for p in base), max(p["bits_per_byte"] for p in base)
    for ax, axis in zip(axes[1:], axes_names):
        tried = sorted(
            [(p[axis], p["bits_per_byte"]) for p in points if p["axis"] == axis]
            + [(base[0][axis], base_mean)]
        )
        ax.plot([x for x, _ in tried], [y for _, y in tried], "o-")
        ax.errorbar(
            [base[0][axis]],
            [base_mean],
            yerr=[[base_mean - lo], [hi - base_mean]],
            color="black",
            capsize=4,
            label="base: seed range",
        )
        ax.set_xscale("log")
        ax.set_xticks([x for x, _ in tried], [f"{x:g}" for x, _ in tried])
        ax.minorticks_off()
        ax.set(xlabel=axis, title=f"after {metrics['setup']['seconds']:g} s of training")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    """``python -m course sweep``: run the points (or ``--show`` a stored sweep) and print the verdicts."""
    from course.results import load_results, provenance, save_results

    p = argparse.ArgumentParser(prog="python -m course sweep", description=__doc__.split("\n")[0])
    defaults = SweepSetup()
    p.add_argument("--size", default=defaults.size, choices=sorted(MODEL_SIZES))
    p.add_argument("--seconds", type=float, default=defaults.seconds, help="training time per point")
    p.add_argument(
        "--n-train-docs", type=int, default=None, help="textbook documents to train on (default: all)"
    )
    p.add_argument("--n-eval-docs", type=int, default=defaults.n_eval_docs)
    p.add_argument(
        "--seeds", nargs="+", type=int, default=list(defaults.noise_seeds), help="seeds of the base point"
    )
    p.add_argument("--jobs", type=int, default=2, help="points trained at once, in separate processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--save", metavar="NAME", help="store the sweep as results/sweep/<NAME>.json")
    p.add_argument("--show", metavar="NAME", help="train nothing: print the stored sweep's verdicts")
    args = p.parse_args(argv)
    if args.show:
        stored = load_results("sweep", args.show)
        if stored is None:
            print(
                f"no stored sweep results/sweep/{args.show}.json: run with --save {args.show}",
                file=sys.stderr,
            )
            return 1
        print("\n".join(verdicts(stored["metrics"])))
        return 0
    if args.jobs < 1 or args.threads < 1:
        p.error("--jobs and --threads must be >= 1")
    try:
        setup = SweepSetup(
            size=args.size,
            seconds=args.seconds,
            n_train_docs=args.n_train_docs,
            n_eval_docs=args.n_eval_docs,
            noise_seeds=tuple(args.seeds),
        )
    except ValueError as exc:
        p.error(str(exc))
    for vocab in sorted({BASE["vocab_size"], *AXES.get("vocab_size", [])}):
        load_tokenizer(vocab)  # trained once here, not by two workers at the same time
    torch.set_num_threads(args.threads)
    peak = matmul_flops_per_s()
    started = time.perf_counter()
    prov = provenance(args.save or "", torch.device("cpu"), {**vars(args), "setup": asdict(setup)}, 0.0)
    tasks = [(point, setup, args.threads) for point in sweep_points(seeds=setup.noise_seeds)]
    if args.jobs == 1:
        results = list(map(_point_job, tasks))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_point_job, tasks))
    for r in results:
        r["matmul_peak_fraction"] = round(r["model_flops_per_s"] / peak, 4)
    metrics = {
        "setup": asdict(setup),
        "base": BASE,
        "axes": AXES,
        "threads_per_point": args.threads,
        "matmul_flops_per_s": peak,  # at threads_per_point threads
        "points": results,
    }
    metrics["headline"] = headline(metrics)
    for r in results:
        print(
            f"{r['axis']:>12} {_settings(r)} seed {r['seed']}: {r['steps']} steps, {r['tokens']:,} tokens "
            f"({r['tokens_per_s']:,.0f}/s, {r['matmul_peak_fraction']:.1%} of matmul peak) -> "
            f"{r['val_loss']:.3f} nats/token, {r['bits_per_byte']:.4f} bits/byte"
        )
    print("\n".join(verdicts(metrics)))
    if args.save:
        prov["wall_time_s"] = round(time.perf_counter() - started, 1)
        print(f"saved {save_results('sweep', args.save, metrics, prov)}", file=sys.stderr)
    return 0


def step_seconds(model: BaseLanguageModel, rows: list[list[int]], device: torch.device) -> float:
    """Wall-clock seconds of one ``training_step`` of a copy of ``model`` on ``rows``.

    ``model`` itself is not changed. The step is the trainer's: the inputs the model asks for
    (``training_inputs``) and only the loss (``training_loss``). On CUDA the clock waits
    for the device at both ends.
    """
    m = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.AdamW(m.parameters(), lr=1e-4)
    inputs = {k: v.to(device) for k, v in training_inputs(m, pad_batch(rows)).items()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    training_step(m, lambda: training_loss(m, inputs)["loss"], optimizer, autocast=autocast_for(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start
