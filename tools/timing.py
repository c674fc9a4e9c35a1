"""Timing and statistics for the speed benchmark: training steps, ``generate`` calls, peak memory, ratios.

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
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable

import torch

from reftx_lib.train.step import autocast_for, training_step
from tools.peers import Side


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

    def step() -> None:
        training_step(model, lambda: loss_fn(model), optimizer, autocast=autocast_for(device))

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
        (
            e
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        ),
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
    return [
        {"step_s": statistics.median(t), "times": t, "first_step_s": f, "peak_mem_bytes": p}
        for t, f, p in zip(times, first_step_s, peaks)
    ]


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
    return {
        "ratio": round(median, 3),
        "ratio_q1": round(q1, 3),
        "ratio_q3": round(q3, 3),
        "ratio_ci_low": None if low is None else round(low, 3),
        "ratio_ci_high": None if high is None else round(high, 3),
    }


def time_generation(
    sides: list[Side], inputs: torch.Tensor, device: torch.device, repeats: int, new_tokens: int
) -> list[list[float]]:
    """Seconds per ``generate`` call for each side (``repeats`` each).

    The sides alternate in counterbalanced order, so drift in the machine's speed hits both alike.
    """
    times: list[list[float]] = [[] for _ in sides]
    for i in range(repeats + 1):  # the first round is warmup
        for j in counterbalanced(len(sides), i):
            side = sides[j]
            _sync(device)
            t0 = time.perf_counter()
            out = side.generate(side.model, inputs)
            _sync(device)
            if out.shape != (inputs.size(0), new_tokens):
                raise RuntimeError(
                    f"{side.name} decoded shape {tuple(out.shape)}, expected "
                    f"{(inputs.size(0), new_tokens)}: the sides must decode the same tokens"
                )
            if i:
                times[j].append(time.perf_counter() - t0)
    return times
