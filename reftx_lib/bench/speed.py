"""Throughput benchmark: our reference models against their Hugging Face peers.

The question it answers: is the teaching code slow? Each of our models runs
next to the closest ``transformers`` model of identical shape (a peer):

- ``ReferenceDecoderOnly`` vs ``GPT2LMHeadModel`` (pre-LN GPT block);
- ``ReferenceTransformer`` vs ``MBartForConditionalGeneration`` (pre-LN encoder-decoder),
  fed equal source and target lengths of ``seq_len / 2`` each.

Both sides get the same sizes, vocabulary (8192), dropout 0, SDPA attention,
exact GELU, the same random tokens, dtype (fp32 on CPU, bf16 autocast on CUDA)
and optimizer (AdamW, fused on CUDA). The peers have a few extra parameters
(learned position embeddings; MBart's embedding LayerNorms), reported as
``params`` / ``peer_params``. Each side trains through its own ordinary
training call: the peers' ``model(..., labels=...)``, and ours
``forward(..., return_logits=False)`` as ``reftx_lib.train.trainer`` calls it, which
on a CPU in eager mode fuses the output head with the loss (``reftx_lib.model.loss``).

Training steps are timed one at a time, alternating ours and the peer in
counterbalanced order (AB BA AB ...: each side follows the other and itself
equally often), so CPU frequency changes and background load hit both equally;
``ms_per_step`` is the median. Each alternating pair gives one speed ratio
(peer time / our time); ``ratio`` is their median and ``ratio_q1`` /
``ratio_q3`` their quartiles, so a reader can tell parity from a real gap on a
noisy machine, and ``ratio_ci_low`` / ``ratio_ci_high`` bound the median
with 95% confidence (``median_ci``): only a row whose interval lies wholly
below 1.0 is shown to be slower than its peer. ``--modes compile`` compiles each side's
forward + loss with ``torch.compile`` (the optimizer step stays eager); a failed
compile becomes the row's ``error`` instead of stopping the run. Generation
(``--generation``, eager) times greedy KV-cached decoding of exactly
``--new-tokens`` tokens on both sides.

Peak memory (``peak_mem_mib``) is the peak of live tensor allocations during a
training step above what was live before it: activations, gradients and
temporaries. Weights and optimizer state are left out because both models share
the process. On CUDA it comes from ``torch.cuda.max_memory_allocated``; CPU has
no such counter, and process RSS mostly shows what glibc keeps cached, so one
extra, untimed step runs under the profiler, which sees every allocation.
``peak_mem_kind`` names the source.

By default (``--malloc-trim auto``) glibc is stopped from handing freed heap memory
back to the OS for the whole run, both sides alike (``reftx_lib.train.device.keep_freed_cpu_memory``).
With glibc's trimming a CPU step takes page faults for memory that the step before it
freed, and as the sides alternate that step was often the other model's: how many faults
a side is charged depends on the heap layout the other side left, not on its own code.
Keeping freed memory removes that coupling, as CUDA's caching allocator does on a GPU.
``--malloc-trim on`` leaves glibc as a user's training finds it; where the C library has
no ``mallopt`` (not glibc), ``auto`` leaves it alone too. The stored provenance records
which one ran.

``--real-data`` asks whether the training loop keeps the device as busy on the
course's data as on fixed shapes. It runs ``reftx_lib.train.trainer.train`` for the
same model and tokens per step on (a) the real corpus (SAMSum for the
encoder-decoder, textbook documents for the decoder-only, length caps from the
course preset ``cpu`` or ``gpu``) and (b) synthetic rows that all have
``seq_len`` tokens, and compares both with the bare fixed-shape step above:
``ratio`` = real-data tokens/s over fixed-shape tokens/s (the target on a GPU is
0.8 or more), split into ``loop_ratio`` (trainer on fixed shapes / bare step:
the loop's own overhead) and ``data_ratio`` (real / synthetic rows through the
trainer: variable shapes and padding). Tokens are real (non-pad) input tokens;
``padding_waste`` is the share of padded positions. The two trainer runs go back
to back in three rounds; the round with the median real/synthetic ratio is
reported.

Run: ``python -m reftx_lib bench --configs tiny small --json``. What a step *teaches*, rather
than what it costs, is measured by ``python -m reftx_lib bench --learning`` (``reftx_lib.bench.learning``).
Defaults cover the four seed configs (tiny, small, medium, large); shapes are
CPU-sized on CPU (batch 8, seq_len 128) and the issue's reference on CUDA
(batch 128 x seq_len 512 = 65,536 tokens per step).
"""
from __future__ import annotations

import argparse
import datetime
import functools
import itertools
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ..model.config import BOS_ID, EOS_ID, MODEL_PRESETS, PAD_ID, SEP_ID
from ..train.device import cpu_model, keep_freed_cpu_memory, resolve_device
from ..model.transformer import ReferenceDecoderOnly, ReferenceTransformer

VOCAB_SIZE = 8192
REAL_DATA_ROUNDS = 3  # synthetic-then-real trainer runs per --real-data row; the median round is reported
H100_BF16_PEAK_FLOPS = 989e12  # H100 / H200 SXM dense bf16, no sparsity
SEED_CONFIGS = ("tiny", "small", "medium", "large")
ARCHITECTURES = ("decoder-only", "encoder-decoder")


@dataclass
class Side:
    """One model of a pair, with what its training step and generation need."""

    name: str
    model: nn.Module
    loss: Callable[[nn.Module], torch.Tensor]  # runs the forward pass on the shared batch
    generate: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # source/prompt (B, P) -> new tokens (B, N)


# ------------------------------------------------------------------- models
def peer_gpt2(preset: str, n_positions: int, vocab_size: int = VOCAB_SIZE, dropout: float = 0.0) -> nn.Module:
    """GPT-2 with our decoder-only model's sizes; ``dropout`` on embeddings, attention and residuals."""
    from transformers import GPT2Config, GPT2LMHeadModel

    p = MODEL_PRESETS[preset]
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=p["d_model"], n_layer=p["n_layers"],
        n_head=p["n_heads"], n_inner=4 * p["d_model"], activation_function="gelu",
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
        bos_token_id=BOS_ID, eos_token_id=None, pad_token_id=PAD_ID,  # no EOS: decode exactly N tokens
    )
    return GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")


def peer_mbart(preset: str, n_positions: int, vocab_size: int = VOCAB_SIZE, dropout: float = 0.0) -> nn.Module:
    """MBart (pre-LN encoder-decoder) with our sizes; ``dropout`` wherever ours has it (not inside the FFN)."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    p = MODEL_PRESETS[preset]
    config = MBartConfig(
        vocab_size=vocab_size, max_position_embeddings=n_positions, d_model=p["d_model"],
        encoder_layers=p["n_layers"], decoder_layers=p["n_layers"],
        encoder_attention_heads=p["n_heads"], decoder_attention_heads=p["n_heads"],
        encoder_ffn_dim=4 * p["d_model"], decoder_ffn_dim=4 * p["d_model"], activation_function="gelu",
        dropout=dropout, attention_dropout=dropout, activation_dropout=0.0,
        scale_embedding=False,  # as ours: token embeddings enter unscaled (ModelConfig.scale_embedding)
        pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=None, forced_eos_token_id=None,
        decoder_start_token_id=BOS_ID,
    )
    return MBartForConditionalGeneration._from_config(config, attn_implementation="sdpa")


def _ours(cls: type, preset: str, n_positions: int) -> nn.Module:
    model = cls.from_preset(preset, vocab_size=VOCAB_SIZE, dropout=0.0, max_len=n_positions)
    with torch.no_grad():
        # EOS logit becomes exactly 0, below the max of the other 8191 random logits:
        # greedy decoding never stops early, like the peer configured without EOS.
        model.embed.weight[EOS_ID] = 0.0
    return model


def build_pair(arch: str, preset: str, n_positions: int, batch: dict[str, torch.Tensor],
               new_tokens: int) -> tuple[Side, Side]:
    """Ours and its peer for one architecture and size, bound to the shared training batch."""
    if arch == "decoder-only":
        ids = batch["ids"]
        ours = Side(
            "ReferenceDecoderOnly", _ours(ReferenceDecoderOnly, preset, n_positions),
            lambda m: m(ids, labels=ids, return_logits=False)["loss"],
            lambda m, prompt: m.generate(prompt, max_new_tokens=new_tokens, use_cache=True),
        )
        peer = Side(
            "GPT2LMHeadModel", peer_gpt2(preset, n_positions),
            lambda m: m(input_ids=ids, labels=ids).loss,
            lambda m, prompt: m.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                do_sample=False, num_beams=1, use_cache=True,
            )[:, prompt.size(1):],
        )
    elif arch == "encoder-decoder":
        src, tgt = batch["src"], batch["tgt"]
        src_mask = src != PAD_ID  # ours always masks source padding; give the peer the same information
        ours = Side(
            "ReferenceTransformer", _ours(ReferenceTransformer, preset, n_positions),
            lambda m: m(src_ids=src, tgt_ids=tgt, labels=tgt, return_logits=False)["loss"],
            lambda m, source: m.generate(source, max_new_tokens=new_tokens, use_cache=True),
        )
        peer = Side(
            "MBartForConditionalGeneration", peer_mbart(preset, n_positions),
            lambda m: m(input_ids=src, attention_mask=src_mask, labels=tgt).loss,
            lambda m, source: m.generate(
                source, attention_mask=source != PAD_ID, max_new_tokens=new_tokens,
                do_sample=False, num_beams=1, use_cache=True,
            )[:, 1:],  # drop the decoder start token
        )
    else:
        raise ValueError(f"unknown architecture {arch!r}; allowed values: {ARCHITECTURES}")
    return ours, peer


def random_batch(batch_size: int, seq_len: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ordinary tokens (ids >= 4, so no padding or specials), identical for both sides.

    ``ids`` (B, T) for the decoder-only pair; ``src`` (B, T/2) and ``tgt`` (B, T - T/2)
    for the encoder-decoder pair, so both architectures read T tokens per row.
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB_SIZE, (batch_size, seq_len), generator=g).to(device)
    half = seq_len // 2
    return {"ids": ids, "src": ids[:, :half].contiguous(), "tgt": ids[:, half:].contiguous()}


# ------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(side: Side, mode: str, device: torch.device) -> Callable[[], None]:
    """One optimizer step of ``side`` on its batch; in compile mode forward + loss are compiled.

    We compile the loss function rather than the module: a compiled module also
    returns the logits as a graph output, and its compiled backward then fills a
    zero gradient as large as the logits (B, T, V) that nobody uses.
    """
    model = side.model
    loss_fn = torch.compile(side.loss) if mode == "compile" else side.loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def step() -> None:
        with autocast:
            loss = loss_fn(model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _cpu_step_peak_bytes(step: Callable[[], None]) -> int:
    """Peak of torch's live CPU allocations during one step, above those live before it.

    The profiler reports every allocation and free made while it runs; their
    running sum is the extra memory the step holds at each moment.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events()
         if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
        key=lambda e: e.start_ns(),
    )
    return max(itertools.accumulate((e.nbytes() for e in events), initial=0))


def counterbalanced(n_sides: int, round_index: int) -> list[int]:
    """Which side runs first in a round: 0, 1, ... in even rounds, reversed in odd ones (ABBA ABBA ...).

    A step can be slowed by what the step before it left behind (the allocator's
    free lists, the caches). With a fixed order each side would always follow the
    other one: at ``large`` the encoder-decoder measured 0.970 and 0.977 of MBart in
    a fixed order, 1.002 and 1.019 counterbalanced, in the same process and minutes.
    """
    order = list(range(n_sides))
    return order if round_index % 2 == 0 else order[::-1]


def time_training(sides: list[Side], mode: str, device: torch.device, warmup: int, steps: int) -> list[dict]:
    """Warm up, then time ``steps`` training steps per side, alternating sides in counterbalanced order."""
    fns = [_train_step(side, mode, device) for side in sides]
    first_step_s = [0.0] * len(fns)
    for i in range(warmup):
        for j, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i == 0:
                first_step_s[j] = time.perf_counter() - t0  # includes compilation in compile mode
    times: list[list[float]] = [[] for _ in fns]
    peaks = [0] * len(fns)
    for i in range(steps):
        for j in counterbalanced(len(fns), i):
            fn = fns[j]
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                live_before = torch.cuda.memory_allocated(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[j].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peaks[j] = max(peaks[j], torch.cuda.max_memory_allocated(device) - live_before)
    if device.type == "cpu":
        peaks = [_cpu_step_peak_bytes(fn) for fn in fns]
    return [{"step_s": statistics.median(t), "times": t, "first_step_s": f, "peak_mem_bytes": p}
            for t, f, p in zip(times, first_step_s, peaks)]


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval for the median of ``values``: two order statistics.

    How many values fall below the true median is Binomial(n, 1/2), whatever the
    distribution, so the k-th smallest and the k-th largest value enclose it with
    probability 1 - 2 P(X < k). k is the largest with that probability >= ``level``.
    None when there are too few values (fewer than 6 for 95%).
    """
    xs, n = sorted(values), len(values)
    k, below = 0, 0.0  # below = P(X < k)
    while k < n and 2 * (below + math.comb(n, k) / 2**n) <= 1 - level:
        below += math.comb(n, k) / 2**n
        k += 1
    return (xs[k - 1], xs[n - k]) if k else None


def paired_ratio(ours_s: list[float], peer_s: list[float]) -> dict[str, float | None]:
    """Median, quartiles and 95% confidence interval of peer/ours time over alternating pairs.

    Pairing cancels what hits both sides of one pair (a busy neighbour, a clock
    change); the quartiles show the noise left in single pairs, and the
    confidence interval how precisely the median itself is known: a row is
    faster than its peer when the whole interval lies above 1.0, and at parity
    when it contains 1.0.
    """
    ratios = sorted(p / o for o, p in zip(ours_s, peer_s))
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else ratios * 3
    low, high = median_ci(ratios) or (None, None)
    return {"ratio": round(median, 3), "ratio_q1": round(q1, 3), "ratio_q3": round(q3, 3),
            "ratio_ci_low": None if low is None else round(low, 3),
            "ratio_ci_high": None if high is None else round(high, 3)}


def time_generation(sides: list[Side], inputs: torch.Tensor, device: torch.device, repeats: int,
                    new_tokens: int) -> list[list[float]]:
    """Seconds per ``generate`` call for each side (``repeats`` each), alternating sides in counterbalanced order."""
    times: list[list[float]] = [[] for _ in sides]
    for i in range(repeats + 1):  # the first round is warmup
        for j in counterbalanced(len(sides), i):
            side = sides[j]
            _sync(device)
            t0 = time.perf_counter()
            out = side.generate(side.model, inputs)
            _sync(device)
            if out.shape != (inputs.size(0), new_tokens):
                raise RuntimeError(f"{side.name} decoded shape {tuple(out.shape)}, expected "
                                   f"{(inputs.size(0), new_tokens)}: the sides must decode the same tokens")
            if i:
                times[j].append(time.perf_counter() - t0)
    return times


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


def train_row(arch: str, preset: str, mode: str, args: argparse.Namespace, device: torch.device) -> dict:
    """Benchmark one training pair; a failure (e.g. compilation) becomes the row's ``error``."""
    b, t = args.batch_size, args.seq_len
    src_len, tgt_len = t // 2, t - t // 2
    row = {"kind": "train", "arch": arch, "config": preset, "mode": mode, "batch": b, "seq_len": t,
           "src_len": src_len if arch == "encoder-decoder" else None,
           "tgt_len": tgt_len if arch == "encoder-decoder" else None,
           "dtype": "bf16-autocast" if device.type == "cuda" else "fp32",
           "steps": args.steps, "warmup": args.warmup, **_common(device)}
    torch.manual_seed(0)
    batch = random_batch(b, t, device)
    ours, peer = build_pair(arch, preset, _n_positions(args), batch, args.new_tokens)
    row.update(model=ours.name, peer=peer.name, params=_count(ours.model), peer_params=_count(peer.model),
               n_positions=_n_positions(args), error=None)
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
    step_flops = (ours.model.flops_per_token(t) * b * t if arch == "decoder-only"
                  else ours.model.flops_per_token(src_len=src_len, tgt_len=tgt_len) * b * tgt_len)
    mine, theirs = result
    for prefix, r in (("", mine), ("peer_", theirs)):
        row[f"{prefix}tokens_per_s"] = round(input_tokens / r["step_s"], 1)
        row[f"{prefix}supervised_tokens_per_s"] = round(supervised / r["step_s"], 1)
        row[f"{prefix}ms_per_step"] = round(1e3 * r["step_s"], 2)
        row[f"{prefix}first_step_s"] = round(r["first_step_s"], 2)
        row[f"{prefix}peak_mem_mib"] = _mib(r["peak_mem_bytes"])
        row[f"{prefix}mfu"] = (round(step_flops / r["step_s"] / H100_BF16_PEAK_FLOPS, 4)
                               if device.type == "cuda" else None)
    row["peak_mem_kind"] = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_profiler"
    row.update(paired_ratio(mine["times"], theirs["times"]))
    return row


def generation_rows(arch: str, preset: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Greedy KV-cached decoding, ours vs the peer's ``generate``, at each ``--gen-batch-sizes``."""
    rows = []
    batch = random_batch(1, 2, device)  # the training batch is not used here
    ours, peer = build_pair(arch, preset, _n_positions(args), batch, args.new_tokens)
    for side in (ours, peer):
        side.model.to(device).eval()
    for b in args.gen_batch_sizes:
        prompt = random_batch(b, args.prompt_len, device, seed=1)["ids"]
        row = {"kind": "generate", "arch": arch, "config": preset, "mode": "eager", "batch": b,
               "seq_len": args.prompt_len + args.new_tokens, "prompt_len": args.prompt_len,
               "new_tokens": args.new_tokens, "dtype": "fp32" if device.type == "cpu" else "bf16-autocast",
               "steps": args.gen_repeats, "warmup": 1, "model": ours.name, "peer": peer.name,
               "params": _count(ours.model), "peer_params": _count(peer.model),
               "n_positions": _n_positions(args), "error": None,
               **_common(device)}
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        try:
            with torch.inference_mode(), autocast:
                mine, theirs = time_generation([ours, peer], prompt, device, args.gen_repeats, args.new_tokens)
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
    """The course's training rows for ``arch``, capped as the matching course preset caps them."""
    from ..course.experiments import rawtext_data, samsum_data
    from ..course.presets import get_preset
    from ..data.tokenizer import load_tokenizer

    preset = get_preset("gpu" if device_type == "cuda" else "cpu")
    tokenizer = load_tokenizer(VOCAB_SIZE)
    if arch == "encoder-decoder":
        data, _ = samsum_data(preset["samsum"], tokenizer)
        return "samsum", list(data["train"]["input_ids"])
    data, _ = rawtext_data(preset["rawtext"], tokenizer, "documents")
    return "textbooks-documents", list(data["train"]["input_ids"])


def _synthetic_rows(arch: str, n: int, seq_len: int) -> list[list[int]]:
    """``n`` rows of exactly ``seq_len`` random ordinary tokens; enc-dec rows get SEP in the middle."""
    ids = random_batch(n, seq_len, torch.device("cpu"), seed=2)["ids"].tolist()
    if arch == "encoder-decoder":
        for row in ids:
            row[seq_len // 2 - 1] = SEP_ID  # source seq_len/2 - 1 tokens, target seq_len/2
    return ids


def _trainer_throughput(arch: str, preset: str, rows: list[list[int]], mode: str, args: argparse.Namespace,
                        device: torch.device) -> dict[str, float]:
    """Real input tokens/s of ``train`` over the steps after warmup, and the padding share there."""
    from ..train.trainer import TrainConfig, train

    cls = ReferenceDecoderOnly if arch == "decoder-only" else ReferenceTransformer
    torch.manual_seed(0)
    model = cls.from_preset(preset, vocab_size=VOCAB_SIZE, dropout=0.0, max_len=max(map(len, rows)))
    warmup = args.warmup
    measured = -(-args.steps // warmup) * warmup  # whole log windows: the warmup ends at a host sync
    config = TrainConfig(
        max_steps=warmup + measured, warmup_steps=warmup, lr=1e-4, batch_tokens=args.batch_size * args.seq_len,
        eval_every=warmup + measured, eval_batches=1, device=device.type, progress=False, log_every=warmup,
        compile=mode == "compile",
    )
    history = train(model, rows, rows[:8], config)
    start, end = history[warmup - 1], history[-1]
    seconds = end["wall_time"] - start["wall_time"]
    padded = [r["tokens"] / (1 - r["padding_waste"]) for r in (start, end)]
    tokens = end["tokens"] - start["tokens"]
    return {"tokens_per_s": tokens / seconds, "supervised_tokens_per_s":
            (end["supervised_tokens"] - start["supervised_tokens"]) / seconds,
            "padding_waste": 1 - tokens / (padded[1] - padded[0]), "steps": measured}


def real_data_row(arch: str, preset: str, mode: str, args: argparse.Namespace, device: torch.device,
                  fixed: dict | None) -> dict:
    """The trainer on real data against fixed shapes; ``fixed`` is this run's bare-step row, if any."""
    row = {"kind": "real-data", "arch": arch, "config": preset, "mode": mode, "batch": args.batch_size,
           "seq_len": args.seq_len, "batch_tokens": args.batch_size * args.seq_len,
           "dtype": "bf16-autocast" if device.type == "cuda" else "fp32", "warmup": args.warmup,
           "model": "ReferenceDecoderOnly" if arch == "decoder-only" else "ReferenceTransformer",
           "peer": None, "params": None, "peer_params": None, "error": None, **_common(device)}
    try:
        if mode == "compile":
            torch._dynamo.reset()
        data_name, rows = _course_rows(arch, device.type)
        longest = max(map(len, rows))
        if longest > args.batch_size * args.seq_len:
            raise ValueError(f"{data_name} has rows of {longest} tokens, more than one step's "
                             f"--batch-size x --seq-len = {args.batch_size * args.seq_len}; raise either")
        synthetic_rows = _synthetic_rows(arch, 4 * args.batch_size, args.seq_len)
        runs = [(_trainer_throughput(arch, preset, synthetic_rows, mode, args, device),
                 _trainer_throughput(arch, preset, rows, mode, args, device)) for _ in range(REAL_DATA_ROUNDS)]
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}".strip()[:500]
        return _fill_missing(row)
    # The round with the median real/synthetic ratio: the two runs of a round are back to back, so a
    # slow spell of a shared machine hits both, and the median round discards one-off outliers.
    synthetic, real = sorted(runs, key=lambda r: r[1]["tokens_per_s"] / r[0]["tokens_per_s"])[len(runs) // 2]
    row.update(data=data_name, steps=real["steps"], rounds=len(runs), tokens_per_s=round(real["tokens_per_s"], 1),
               real_tokens_per_s=round(real["tokens_per_s"], 1),
               real_supervised_tokens_per_s=round(real["supervised_tokens_per_s"], 1),
               synthetic_tokens_per_s=round(synthetic["tokens_per_s"], 1),
               padding_waste=round(real["padding_waste"], 4),
               synthetic_padding_waste=round(synthetic["padding_waste"], 4),
               data_ratio=round(real["tokens_per_s"] / synthetic["tokens_per_s"], 3))
    bare = fixed["tokens_per_s"] if fixed and fixed.get("tokens_per_s") else None
    row.update(fixed_tokens_per_s=bare,
               loop_ratio=round(synthetic["tokens_per_s"] / bare, 3) if bare else None,
               ratio=round(real["tokens_per_s"] / bare, 3) if bare else None)
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
    ("kind", "kind", "{}"), ("arch", "arch", "{}"), ("config", "config", "{}"), ("mode", "mode", "{}"),
    ("B", "batch", "{}"), ("T", "seq_len", "{}"),
    ("ours tok/s", "tokens_per_s", "{:,.0f}"), ("peer tok/s", "peer_tokens_per_s", "{:,.0f}"),
    ("ratio", "ratio", "{:.2f}"), ("95% CI", ("ratio_ci_low", "ratio_ci_high"), "{:.2f}-{:.2f}"),
    ("ours ms", "ms_per_step", "{:.2f}"), ("peer ms", "peer_ms_per_step", "{:.2f}"),
    ("ours MiB", "peak_mem_mib", "{:.0f}"), ("peer MiB", "peer_peak_mem_mib", "{:.0f}"),
    ("mfu", "mfu", "{:.1%}"),
]


_REAL_TABLE = [
    ("kind", "kind", "{}"), ("arch", "arch", "{}"), ("config", "config", "{}"), ("mode", "mode", "{}"),
    ("data", "data", "{}"), ("tokens/step", "batch_tokens", "{:,}"), ("fixed tok/s", "fixed_tokens_per_s", "{:,.0f}"),
    ("loop synth tok/s", "synthetic_tokens_per_s", "{:,.0f}"), ("loop real tok/s", "real_tokens_per_s", "{:,.0f}"),
    ("padding", "padding_waste", "{:.1%}"), ("loop/fixed", "loop_ratio", "{:.2f}"),
    ("real/synth", "data_ratio", "{:.2f}"), ("real/fixed", "ratio", "{:.2f}"),
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
    lines += [f"error in {r['kind']} {r['arch']} {r['config']} {r['mode']}: {r['error']}"
              for r in rows if r.get("error")]
    if rows:
        r = rows[0]
        lines.append(f"device {r['device']} ({r['device_name']}, {r['threads']} threads), torch {r['torch']}, "
                     f"transformers {r['transformers']}")
    if peer_rows:
        lines.append("ratio = ours / peer tokens per second: the median over alternating pairs, with its 95% "
                     "confidence interval; ms is per training step, or per decoding step for generate rows")
    if real_rows:
        lines.append("real-data: real (non-pad) input tokens per second; fixed = the bare fixed-shape step, "
                     "loop = reftx_lib.train.trainer.train on fixed-shape (synth) or course (real) rows")
    return "\n".join(lines)


# ------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse options and fill the device-dependent defaults (``args.device`` becomes a torch.device)."""
    p = argparse.ArgumentParser(prog="python -m reftx_lib bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--configs", nargs="+", choices=sorted(MODEL_PRESETS),
                   help=f"model sizes (default: the seed's {' '.join(SEED_CONFIGS)})")
    p.add_argument("--archs", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    p.add_argument("--modes", nargs="+", choices=("eager", "compile"), default=["eager", "compile"])
    p.add_argument("--steps", type=int, default=10,
                   help="timed training steps per side (median reported; 6 or more give a 95%% interval)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per side first (compilation happens here)")
    p.add_argument("--batch-size", type=int, help="training batch (default: 8 on CPU, 128 on CUDA)")
    p.add_argument("--seq-len", type=int, help="tokens per row; enc-dec splits it into source and target halves "
                                                 "(default: 128 on CPU, 512 on CUDA)")
    p.add_argument("--generation", action="store_true", help="also benchmark greedy KV-cached generation")
    p.add_argument("--gen-batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--prompt-len", type=int, default=32, help="prompt (decoder-only) or source (enc-dec) length")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens each side decodes (no early EOS)")
    p.add_argument("--gen-repeats", type=int, default=9,
                   help="timed generate calls per side (median reported; 6 or more give a 95%% interval)")
    p.add_argument("--real-data", action="store_true",
                   help="also run the trainer on the course's data and on fixed-shape rows (needs the data)")
    p.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    p.add_argument("--save", metavar="PRESET",
                   help="also store the rows in results/bench/<PRESET>.json with provenance (e.g. cpu, gpu)")
    p.add_argument("--malloc-trim", choices=("auto", "on", "off"), default="auto",
                   help="off: glibc keeps freed CPU heap memory, so a step takes no page faults that depend on "
                        "what the other side freed before it (reftx_lib.train.device.keep_freed_cpu_memory); on: "
                        "glibc's default trimming, as in a user's training; auto (default): off where the C "
                        "library has mallopt, else on")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice); on a busy "
                                               "machine 1 thread gives steadier numbers than oversubscribed cores")
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
        raise SystemExit("--malloc-trim off needs glibc's mallopt, which this C library lacks; use auto or on")
    return "on"


def run(args: argparse.Namespace) -> Iterator[dict]:
    """Yield the rows one by one: per size and architecture, each training mode, then generation,
    then (``--real-data``) the trainer on real data per mode."""
    if args.threads:
        torch.set_num_threads(args.threads)
    args.malloc_trim = apply_malloc_trim(args.malloc_trim)  # what ran, for the stored provenance
    if args.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers outside autocast, for both sides
    for preset, arch in itertools.product(args.configs, args.archs):
        fixed = {}
        for mode in args.modes:
            fixed[mode] = train_row(arch, preset, mode, args, args.device)
            yield fixed[mode]
        if args.generation:
            yield from generation_rows(arch, preset, args, args.device)
        if args.real_data:
            for mode in args.modes:
                yield real_data_row(arch, preset, mode, args, args.device, fixed[mode])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark on one device in this process; print JSON lines as rows finish, or a table at the end.

    Returns 1 if any row holds an error (e.g. a failed compile), else 0.
    ``--learning`` hands the remaining options to the learning-parity benchmark (``reftx_lib.bench.learning``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--learning" in argv:
        from .learning import main as learning_main

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
        from ..course.results import provenance, save_results

        peer_rows = [r for r in rows if r.get("ratio") is not None and r["kind"] != "real-data"]
        ratios = [r["ratio"] for r in peer_rows]
        real = [r["ratio"] for r in rows if r.get("ratio") is not None and r["kind"] == "real-data"]
        metrics = {"rows": rows, "min_ratio": min(ratios, default=None), "max_ratio": max(ratios, default=None),
                   "peer_rows": len(peer_rows),
                   # the interval lies wholly below 1.0: shown slower than the peer, not just noise
                   "rows_slower": sum(r["ratio_ci_high"] is not None and r["ratio_ci_high"] < 1.0 for r in peer_rows),
                   "min_real_data_ratio": min(real, default=None)}
        prov = provenance(args.save, torch.device(rows[0]["device"] if rows else "cpu"), vars(args),
                          time.perf_counter() - started)
        print(f"saved {save_results('bench', args.save, metrics, prov)}", file=sys.stderr)
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
