"""Throughput benchmark: our reference models against their Hugging Face peers.

The question it answers: is the teaching code slow? Each of our models runs
next to the closest ``transformers`` model of identical shape (a peer,
``tools.peers``), timed step by step (``tools.timing``);
the rows and their table are ``tools.speed``'s.

By default (``--malloc-trim auto``) glibc is stopped from handing freed heap memory
back to the OS for the whole run, both sides alike (``tools.machine.keep_freed_cpu_memory``).
With glibc's trimming a CPU step takes page faults for memory that the step before it
freed, and as the sides alternate that step was often the other model's: how many faults
a side is charged depends on the heap layout the other side left, not on its own code.
Keeping freed memory removes that coupling, as CUDA's caching allocator does on a GPU.
``--malloc-trim on`` leaves glibc as a user's training finds it; where the C library has
no ``mallopt`` (not glibc), ``auto`` leaves it alone too. The stored provenance records
which one ran.

Run: ``python -m tools --configs tiny small --json``. What a step *teaches*, rather
than what it costs, is measured by ``python -m tools --learning`` (``tools.learning``).
Defaults cover the four seed configs (tiny, small, medium, large); shapes are
CPU-sized on CPU (batch 8, seq_len 128) and the issue's reference on CUDA
(batch 128 x seq_len 512 = 65,536 tokens per step).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterator

import torch

from reftx_lib.model.config import MODEL_SIZES
from reftx_lib.train.device import resolve_device
from tools.machine import keep_freed_cpu_memory
from tools.peers import ARCHITECTURES
from tools.speed import format_table, generation_rows, real_data_row, train_row

SEED_CONFIGS = ("tiny", "small", "medium", "large")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse options and fill the device-dependent defaults (``args.device`` becomes a torch.device)."""
    p = argparse.ArgumentParser(prog="python -m tools", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--configs",
        nargs="+",
        choices=sorted(MODEL_SIZES),
        help=f"model sizes (default: the seed's {' '.join(SEED_CONFIGS)})",
    )
    p.add_argument("--archs", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    p.add_argument("--modes", nargs="+", choices=("eager", "compile"), default=["eager", "compile"])
    p.add_argument(
        "--steps",
        type=int,
        default=10,
        help="timed training steps per side (median reported; 6 or more give a 95%% interval)",
    )
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed steps per side first (compilation happens here)"
    )
    p.add_argument("--batch-size", type=int, help="training batch (default: 8 on CPU, 128 on CUDA)")
    p.add_argument(
        "--seq-len",
        type=int,
        help="tokens per row; enc-dec splits it into source and target halves "
        "(default: 128 on CPU, 512 on CUDA)",
    )
    p.add_argument("--generation", action="store_true", help="also benchmark greedy KV-cached generation")
    p.add_argument("--gen-batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument(
        "--prompt-len", type=int, default=32, help="prompt (decoder-only) or source (enc-dec) length"
    )
    p.add_argument("--new-tokens", type=int, default=64, help="tokens each side decodes (no early EOS)")
    p.add_argument(
        "--gen-repeats",
        type=int,
        default=9,
        help="timed generate calls per side (median reported; 6 or more give a 95%% interval)",
    )
    p.add_argument(
        "--real-data",
        action="store_true",
        help="also run the trainer on the course's data and on fixed-shape rows (needs the data)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    p.add_argument(
        "--save",
        metavar="BUDGET",
        help="also store the rows in results/bench/<BUDGET>.json with provenance (e.g. cpu, gpu)",
    )
    p.add_argument(
        "--malloc-trim",
        choices=("auto", "on", "off"),
        default="auto",
        help="off: glibc keeps freed CPU heap memory, so a step takes no page faults that depend on "
        "what the other side freed before it (tools.machine.keep_freed_cpu_memory); on: "
        "glibc's default trimming, as in a user's training; auto (default): off where the C "
        "library has mallopt, else on",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice); on a busy "
        "machine 1 thread gives steadier numbers than oversubscribed cores",
    )
    args = p.parse_args(argv)
    try:
        args.device = resolve_device(args.device)
    except ValueError as exc:
        raise SystemExit(f"--device {args.device}: {exc}") from None
    gpu = args.device.type == "cuda"
    args.configs = args.configs or list(SEED_CONFIGS)
    args.batch_size = args.batch_size or (128 if gpu else 8)
    args.seq_len = args.seq_len or (512 if gpu else 128)
    for name in ("steps", "warmup", "batch_size", "prompt_len", "new_tokens", "gen_repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.seq_len < 4 or min(args.gen_batch_sizes) < 1:
        p.error("--seq-len must be >= 4 and every --gen-batch-sizes value >= 1")
    return args


def apply_malloc_trim(choice: str) -> str:
    """Carry out ``--malloc-trim`` for this process and return what runs, ``on`` or ``off``.

    Why a function: ``auto`` must not fail on a C library without ``mallopt`` (macOS), while an
    explicit ``off`` that cannot be honoured is an error, not a silent ``on``.
    """
    if choice == "on":
        return "on"
    if keep_freed_cpu_memory():
        return "off"
    if choice == "off":
        raise SystemExit(
            "--malloc-trim off needs glibc's mallopt, which this C library lacks; use auto or on"
        )
    return "on"


def run(args: argparse.Namespace) -> Iterator[dict]:
    """Yield the rows one by one: per size and architecture, each training mode, then generation,
    then (``--real-data``) the trainer on real data per mode."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.malloc_trim = apply_malloc_trim(args.malloc_trim)  # what ran, for the stored provenance
    if args.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers outside autocast, for both sides
    for size, arch in itertools.product(args.configs, args.archs):
        fixed = {}
        for mode in args.modes:
            fixed[mode] = train_row(arch, size, mode, args, args.device)
            yield fixed[mode]
        if args.generation:
            yield from generation_rows(arch, size, args, args.device)
        if args.real_data:
            for mode in args.modes:
                yield real_data_row(arch, size, mode, args, args.device, fixed[mode])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on one device in this process; print JSON lines as rows finish, or a table at
    the end.

    Returns 1 if any row holds an error (e.g. a failed compile), else 0.
    ``--learning`` hands the remaining options to the learning-parity benchmark
    (``tools.learning``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--learning" in argv:
        from tools.learning import main as learning_main

        argv.remove("--learning")
        return learning_main(argv)
    args = parse_args(argv)
    started = time.perf_counter()
    rows = []
    for row in run(args):
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print(format_table(rows))
    if args.save:
        from course.results import provenance, save_results

        peer_rows = [r for r in rows if r.get("ratio") is not None and r["kind"] != "real-data"]
        ratios = [r["ratio"] for r in peer_rows]
        real = [r["ratio"] for r in rows if r.get("ratio") is not None and r["kind"] == "real-data"]
        metrics = {
            "rows": rows,
            "min_ratio": min(ratios, default=None),
            "max_ratio": max(ratios, default=None),
            "peer_rows": len(peer_rows),
            # the interval lies wholly below 1.0: shown slower than the peer, not just noise
            "rows_slower": sum(
                r["ratio_ci_high"] is not None and r["ratio_ci_high"] < 1.0 for r in peer_rows
            ),
            "min_real_data_ratio": min(real, default=None),
        }
        prov = provenance(
            args.save,
            torch.device(rows[0]["device"] if rows else "cpu"),
            vars(args),
            time.perf_counter() - started,
        )
        print(f"saved {save_results('bench', args.save, metrics, prov)}", file=sys.stderr)
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
