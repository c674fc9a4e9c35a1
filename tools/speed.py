"""Speed result rows: ours against its peer per size, architecture and mode, and the table of them.

``train_row`` times a training step of each side (``tools.peers`` builds the
pair, ``tools.timing`` times it), ``generation_rows`` their greedy decoding,
and ``real_data_row`` the training loop on the course's data; ``format_table`` prints them.

``--real-data`` asks whether the training loop keeps the device as busy on the
course's data as on fixed shapes. It runs ``reftx_lib.train.trainer.train`` for the
same model and tokens per step on (a) the real corpus (SAMSum for the
encoder-decoder, textbook documents for the decoder-only, length caps from the
course budget ``cpu`` or ``gpu``) and (b) synthetic rows that all have
``seq_len`` tokens, and compares both with the bare fixed-shape step (``train_row``):
``ratio`` = real-data tokens/s over fixed-shape tokens/s (the target on a GPU is
0.8 or more), split into ``loop_ratio`` (trainer on fixed shapes / bare step:
the loop's own overhead) and ``data_ratio`` (real / synthetic rows through the
trainer: variable shapes and padding). Tokens are real (non-pad) input tokens;
``padding_waste`` is the share of padded positions. The two trainer runs go back
to back in three rounds; the round with the median real/synthetic ratio is
reported.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import statistics

import torch
from torch import nn

from course.accounting import flops_per_token
from course.results import cpu_model
from reftx_lib.constants import SEP_ID
from reftx_lib.model.transformer import ReferenceDecoderOnly, ReferenceTransformer
from reftx_lib.train.step import autocast_for
from tools.peers import VOCAB_SIZE, build_pair, random_batch
from tools.timing import paired_ratio, time_generation, time_training

REAL_DATA_ROUNDS = 3  # synthetic-then-real trainer runs per --real-data row; the median round is reported
H100_BF16_PEAK_FLOPS = 989e12  # H100 / H200 SXM dense bf16, no sparsity


# ------------------------------------------------------------------- rows
def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else round(nbytes / 2**20, 2)


def _common(device: torch.device) -> dict:
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def train_row(arch: str, size: str, mode: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Benchmark one training pair; a failure (e.g. compilation) becomes the row's ``error``."""
    b, t = args.batch_size, args.seq_len
    src_len, tgt_len = t // 2, t - t // 2
    row = {
        "kind": "train",
        "arch": arch,
        "config": size,
        "mode": mode,
        "batch": b,
        "seq_len": t,
        "src_len": src_len if arch == "encoder-decoder" else None,
        "tgt_len": tgt_len if arch == "encoder-decoder" else None,
        "dtype": "bf16-autocast" if device.type == "cuda" else "fp32",
        "steps": args.steps,
        "warmup": args.warmup,
        **_common(device),
    }
    torch.manual_seed(0)
    batch = random_batch(b, t, device)
    ours, peer = build_pair(arch, size, _n_positions(args), batch, args.new_tokens)
    row.update(
        model=ours.name,
        peer=peer.name,
        params=_count(ours.model),
        peer_params=_count(peer.model),
        n_positions=_n_positions(args),
        error=None,
    )
    try:
        if mode == "compile":
            torch._dynamo.reset()  # fresh caches: no recompile limits carried over from earlier rows
        for side in (ours, peer):
            side.model.to(device).train()
        result = time_training([ours, peer], mode, device, args.warmup, args.steps)
    except Exception as exc:  # report and carry on: one failing compile must not hide the other rows
        row["error"] = f"{type(exc).__name__}: {exc}".strip()[:500]
        return _fill_missing(row)
    input_tokens = b * t  # decoder-only: B*T; encoder-decoder: B*(S+T) = B*T
    supervised = b * (t - 1) if arch == "decoder-only" else b * tgt_len
    step_flops = (
        flops_per_token(ours.model, t) * b * t
        if arch == "decoder-only"
        else flops_per_token(ours.model, src_len=src_len, tgt_len=tgt_len) * b * tgt_len
    )
    mine, theirs = result
    for prefix, r in (("", mine), ("peer_", theirs)):
        row[f"{prefix}tokens_per_s"] = round(input_tokens / r["step_s"], 1)
        row[f"{prefix}supervised_tokens_per_s"] = round(supervised / r["step_s"], 1)
        row[f"{prefix}ms_per_step"] = round(1e3 * r["step_s"], 2)
        row[f"{prefix}first_step_s"] = round(r["first_step_s"], 2)
        row[f"{prefix}peak_mem_mib"] = _mib(r["peak_mem_bytes"])
        row[f"{prefix}mfu"] = (
            round(step_flops / r["step_s"] / H100_BF16_PEAK_FLOPS, 4) if device.type == "cuda" else None
        )
    row["peak_mem_kind"] = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_profiler"
    row.update(paired_ratio(mine["times"], theirs["times"]))
    return row


def generation_rows(arch: str, size: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Greedy KV-cached decoding, ours vs the peer's ``generate``, at each ``--gen-batch-sizes``."""
    rows = []
    batch = random_batch(1, 2, device)  # the training batch is not used here
    ours, peer = build_pair(arch, size, _n_positions(args), batch, args.new_tokens)
    for side in (ours, peer):
        side.model.to(device).eval()
    for b in args.gen_batch_sizes:
        prompt = random_batch(b, args.prompt_len, device, seed=1)["ids"]
        row = {
            "kind": "generate",
            "arch": arch,
            "config": size,
            "mode": "eager",
            "batch": b,
            "seq_len": args.prompt_len + args.new_tokens,
            "prompt_len": args.prompt_len,
            "new_tokens": args.new_tokens,
            "dtype": "fp32" if device.type == "cpu" else "bf16-autocast",
            "steps": args.gen_repeats,
            "warmup": 1,
            "model": ours.name,
            "peer": peer.name,
            "params": _count(ours.model),
            "peer_params": _count(peer.model),
            "n_positions": _n_positions(args),
            "error": None,
            **_common(device),
        }
        try:
            with torch.inference_mode(), autocast_for(device):
                mine, theirs = time_generation(
                    [ours, peer], prompt, device, args.gen_repeats, args.new_tokens
                )
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}".strip()[:500]
            rows.append(_fill_missing(row))
            continue
        for prefix, times in (("", mine), ("peer_", theirs)):
            s = statistics.median(times)
            row[f"{prefix}tokens_per_s"] = round(b * args.new_tokens / s, 1)
            row[f"{prefix}ms_per_step"] = round(1e3 * s / args.new_tokens, 3)  # per decoding step
            row[f"{prefix}peak_mem_mib"] = None
            row[f"{prefix}mfu"] = None
        row["peak_mem_kind"] = None
        row.update(paired_ratio(mine, theirs))
        rows.append(row)
    return rows


@functools.cache  # every size and mode of one run trains on the same rows: load and encode them once
def _course_rows(arch: str, device_type: str) -> tuple[str, list[list[int]]]:
    """The course's training rows for ``arch``, capped as the matching course budget caps them."""
    from course.budgets import get_budget
    from course.experiments import rawtext_data, samsum_data
    from reftx_lib.data.tokenizer import load_tokenizer

    settings = get_budget("gpu" if device_type == "cuda" else "cpu")
    tokenizer = load_tokenizer(VOCAB_SIZE)
    if arch == "encoder-decoder":
        data, _ = samsum_data(settings["samsum"], tokenizer)
        return "samsum", list(data["train"]["input_ids"])
    data, _ = rawtext_data(settings["rawtext"], tokenizer, "documents")
    return "textbooks-documents", list(data["train"]["input_ids"])


def _synthetic_rows(arch: str, n: int, seq_len: int) -> list[list[int]]:
    """``n`` rows of exactly ``seq_len`` random ordinary tokens; enc-dec rows get SEP in the middle."""
    ids = random_batch(n, seq_len, torch.device("cpu"), seed=2)["ids"].tolist()
    if arch == "encoder-decoder":
        for row in ids:
            row[seq_len // 2 - 1] = SEP_ID  # source seq_len/2 - 1 tokens, target seq_len/2
    return ids


def _trainer_throughput(
    arch: str, size: str, rows: list[list[int]], mode: str, args: argparse.Namespace, device: torch.device
) -> dict[str, float]:
    """Real input tokens/s of ``train`` over the steps after warmup, and the padding share there."""
    from reftx_lib.train.trainer import TrainConfig, train

    cls = ReferenceDecoderOnly if arch == "decoder-only" else ReferenceTransformer
    torch.manual_seed(0)
    model = cls.from_size(size, vocab_size=VOCAB_SIZE, dropout=0.0, max_len=max(map(len, rows)))
    warmup = args.warmup
    measured = -(-args.steps // warmup) * warmup  # whole log windows: the warmup ends at a host sync
    config = TrainConfig(
        max_steps=warmup + measured,
        warmup_steps=warmup,
        lr=1e-4,
        batch_tokens=args.batch_size * args.seq_len,
        eval_every=warmup + measured,
        eval_batches=1,
        device=device.type,
        progress=False,
        log_every=warmup,
        compile=mode == "compile",
    )
    history = train(model, rows, rows[:8], config)
    start, end = history[warmup - 1], history[-1]
    seconds = end["wall_time"] - start["wall_time"]
    tokens = end["tokens"] - start["tokens"]
    return {
        "tokens_per_s": tokens / seconds,
        "supervised_tokens_per_s": (end["supervised_tokens"] - start["supervised_tokens"]) / seconds,
        "padding_waste": end["padding_waste"],  # of the computed tokens, over the whole run
        "steps": measured,
    }


def real_data_row(
    arch: str, size: str, mode: str, args: argparse.Namespace, device: torch.device, fixed: dict | None
) -> dict:
    """The trainer on real data against fixed shapes; ``fixed`` is this run's bare-step row, if any."""
    row = {
        "kind": "real-data",
        "arch": arch,
        "config": size,
        "mode": mode,
        "batch": args.batch_size,
        "seq_len": args.seq_len,
        "batch_tokens": args.batch_size * args.seq_len,
        "dtype": "bf16-autocast" if device.type == "cuda" else "fp32",
        "warmup": args.warmup,
        "model": "ReferenceDecoderOnly" if arch == "decoder-only" else "ReferenceTransformer",
        "peer": None,
        "params": None,
        "peer_params": None,
        "error": None,
        **_common(device),
    }
    try:
        if mode == "compile":
            torch._dynamo.reset()
        data_name, rows = _course_rows(arch, device.type)
        longest = max(map(len, rows))
        if longest > args.batch_size * args.seq_len:
            raise ValueError(
                f"{data_name} has rows of {longest} tokens, more than one step's "
                f"--batch-size x --seq-len = {args.batch_size * args.seq_len}; raise either"
            )
        synthetic_rows = _synthetic_rows(arch, 4 * args.batch_size, args.seq_len)
        runs = [
            (
                _trainer_throughput(arch, size, synthetic_rows, mode, args, device),
                _trainer_throughput(arch, size, rows, mode, args, device),
            )
            for _ in range(REAL_DATA_ROUNDS)
        ]
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}".strip()[:500]
        return _fill_missing(row)
    # The round with the median real/synthetic ratio: the two runs of a round are back to back, so a
    # slow spell of a shared machine hits both, and the median round discards one-off outliers.
    synthetic, real = sorted(runs, key=lambda r: r[1]["tokens_per_s"] / r[0]["tokens_per_s"])[len(runs) // 2]
    row.update(
        data=data_name,
        steps=real["steps"],
        rounds=len(runs),
        tokens_per_s=round(real["tokens_per_s"], 1),
        real_tokens_per_s=round(real["tokens_per_s"], 1),
        real_supervised_tokens_per_s=round(real["supervised_tokens_per_s"], 1),
        synthetic_tokens_per_s=round(synthetic["tokens_per_s"], 1),
        padding_waste=round(real["padding_waste"], 4),
        synthetic_padding_waste=round(synthetic["padding_waste"], 4),
        data_ratio=round(real["tokens_per_s"] / synthetic["tokens_per_s"], 3),
    )
    bare = fixed["tokens_per_s"] if fixed and fixed.get("tokens_per_s") else None
    row.update(
        fixed_tokens_per_s=bare,
        loop_ratio=round(synthetic["tokens_per_s"] / bare, 3) if bare else None,
        ratio=round(real["tokens_per_s"] / bare, 3) if bare else None,
    )
    return _fill_missing(row)


def _fill_missing(row: dict) -> dict:
    """A failed row still carries every field, as null, so JSON consumers see one schema."""
    for prefix in ("", "peer_"):
        for key in ("tokens_per_s", "ms_per_step", "peak_mem_mib", "mfu"):
            row.setdefault(prefix + key, None)
    for key in ("ratio", "ratio_q1", "ratio_q3", "ratio_ci_low", "ratio_ci_high"):
        row.setdefault(key, None)
    return row


def _n_positions(args: argparse.Namespace) -> int:
    """Position table size for both sides: long enough for training and for generation."""
    return max(args.seq_len, args.prompt_len + args.new_tokens + 1)


# ------------------------------------------------------------------- output
_TABLE = [  # (header, key, format)
    ("kind", "kind", "{}"),
    ("arch", "arch", "{}"),
    ("config", "config", "{}"),
    ("mode", "mode", "{}"),
    ("B", "batch", "{}"),
    ("T", "seq_len", "{}"),
    ("ours tok/s", "tokens_per_s", "{:,.0f}"),
    ("peer tok/s", "peer_tokens_per_s", "{:,.0f}"),
    ("ratio", "ratio", "{:.2f}"),
    ("95% CI", ("ratio_ci_low", "ratio_ci_high"), "{:.2f}-{:.2f}"),
    ("ours ms", "ms_per_step", "{:.2f}"),
    ("peer ms", "peer_ms_per_step", "{:.2f}"),
    ("ours MiB", "peak_mem_mib", "{:.0f}"),
    ("peer MiB", "peer_peak_mem_mib", "{:.0f}"),
    ("mfu", "mfu", "{:.1%}"),
]


_REAL_TABLE = [
    ("kind", "kind", "{}"),
    ("arch", "arch", "{}"),
    ("config", "config", "{}"),
    ("mode", "mode", "{}"),
    ("data", "data", "{}"),
    ("tokens/step", "batch_tokens", "{:,}"),
    ("fixed tok/s", "fixed_tokens_per_s", "{:,.0f}"),
    ("loop synth tok/s", "synthetic_tokens_per_s", "{:,.0f}"),
    ("loop real tok/s", "real_tokens_per_s", "{:,.0f}"),
    ("padding", "padding_waste", "{:.1%}"),
    ("loop/fixed", "loop_ratio", "{:.2f}"),
    ("real/synth", "data_ratio", "{:.2f}"),
    ("real/fixed", "ratio", "{:.2f}"),
]


def _cell(row: dict, keys: str | tuple[str, ...], fmt: str) -> str:
    """One table cell: ``fmt`` filled with the row's values at ``keys``, or "-" if any is missing."""
    values = [row.get(k) for k in ((keys,) if isinstance(keys, str) else keys)]
    return "-" if any(v is None for v in values) else fmt.format(*values)


def _aligned(spec: list[tuple[str, str | tuple[str, ...], str]], rows: list[dict]) -> list[str]:
    cells = [[h for h, _, _ in spec]]
    for row in rows:
        cells.append([_cell(row, k, f) for _, k, f in spec])
    widths = [max(len(r[i]) for r in cells) for i in range(len(spec))]
    return ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]


def format_table(rows: list[dict]) -> str:
    """Rows as aligned text tables (peer comparison, then real data); errors are listed under them."""
    peer_rows = [r for r in rows if r["kind"] != "real-data"]
    real_rows = [r for r in rows if r["kind"] == "real-data"]
    lines = _aligned(_TABLE, peer_rows) if peer_rows else []
    if real_rows:
        lines += ([""] if lines else []) + _aligned(_REAL_TABLE, real_rows)
    lines += [
        f"error in {r['kind']} {r['arch']} {r['config']} {r['mode']}: {r['error']}"
        for r in rows
        if r.get("error")
    ]
    if rows:
        r = rows[0]
        lines.append(
            f"device {r['device']} ({r['device_name']}, {r['threads']} threads), torch {r['torch']}, "
            f"transformers {r['transformers']}"
        )
    if peer_rows:
        lines.append(
            "ratio = ours / peer tokens per second: the median over alternating pairs, with its 95% "
            "confidence interval; ms is per training step, or per decoding step for generate rows"
        )
    if real_rows:
        lines.append(
            "real-data: real (non-pad) input tokens per second; fixed = the bare fixed-shape step, "
            "loop = reftx_lib.train.trainer.train on fixed-shape (synth) or course (real) rows"
        )
    return "\n".join(lines)
