"""Benchmark tests on CI sizes (smoke budget: d_model 32, 1 layer; batch 2, 16 tokens; CPU).

They check the rows, never the timings: timed assertions are flaky, and the
ratios are the benchmark's output, not a property of the code.
"""

import json
import math
import random
import subprocess
import sys

import pytest
import torch

from reftx_lib import MODEL_SIZES
from tools import machine as machine_module
from tools.__main__ import apply_malloc_trim, parse_args
from tools.__main__ import main as bench_main
from tools.__main__ import run as bench_run
from tools.peers import Side
from tools.timing import median_ci, paired_ratio, time_generation, time_training

SMOKE = [
    "--device",
    "cpu",
    "--configs",
    "nano",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--batch-size",
    "2",
    "--seq-len",
    "16",
    "--prompt-len",
    "4",
    "--new-tokens",
    "3",
    "--gen-batch-sizes",
    "1",
    "2",
    "--gen-repeats",
    "1",
    "--malloc-trim",
    "on",
    "--json",
]  # on: leave pytest's own heap as glibc runs it
FIELDS = [
    "kind",
    "model",
    "peer",
    "config",
    "mode",
    "device",
    "batch",
    "seq_len",
    "tokens_per_s",
    "peer_tokens_per_s",
    "ratio",
    "ms_per_step",
    "peer_ms_per_step",
    "peak_mem_mib",
    "peer_peak_mem_mib",
    "mfu",
    "params",
    "peer_params",
    "torch",
    "date",
    "error",
]


def run(capsys, *extra) -> tuple[int, list[dict]]:
    code = bench_main(SMOKE + list(extra))
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def eager_rows() -> list[dict]:
    """One eager run with generation, shared by the tests below (it takes a few seconds)."""
    return list(bench_run(parse_args(SMOKE + ["--modes", "eager", "--generation"])))


def test_rows_have_every_field_and_positive_numbers(eager_rows):
    rows = eager_rows
    kinds = [(r["kind"], r["model"], r["batch"]) for r in rows]
    assert kinds == [
        ("train", "ReferenceDecoderOnly", 2),
        ("generate", "ReferenceDecoderOnly", 1),
        ("generate", "ReferenceDecoderOnly", 2),
        ("train", "ReferenceTransformer", 2),
        ("generate", "ReferenceTransformer", 1),
        ("generate", "ReferenceTransformer", 2),
    ]
    for row in rows:
        assert set(FIELDS) <= set(row), set(FIELDS) - set(row)
        assert row["error"] is None and row["device"] == "cpu" and row["config"] == "nano"
        for key in ("tokens_per_s", "peer_tokens_per_s", "ratio", "ms_per_step", "peer_ms_per_step"):
            assert row[key] > 0, key
        assert row["mfu"] is None  # no meaningful peak FLOP/s on CPU
        if row["kind"] == "train":
            assert row["peak_mem_mib"] > 0 and row["peer_peak_mem_mib"] > 0
            assert row["peak_mem_kind"] == "cpu_profiler"


def test_peers_have_our_shapes(eager_rows):
    """Same widths and depths: the parameter counts differ only by what the peers add.

    GPT-2 adds a learned position table (n_positions x d); MBart adds one per stack
    (with 2 offset rows each) and a LayerNorm on the embeddings of each stack, where ours
    has one for both (``embed_norm``).
    """
    d = MODEL_SIZES["nano"]["d_model"]
    for row in eager_rows:
        extra = row["peer_params"] - row["params"]
        n = row["n_positions"]
        if row["peer"] == "GPT2LMHeadModel":
            assert extra == n * d
        else:
            assert row["peer"] == "MBartForConditionalGeneration"
            assert extra == 2 * (n + 2) * d + 2 * 2 * d - 2 * d


def test_encoder_decoder_gets_half_the_tokens_as_source(eager_rows):
    row = next(r for r in eager_rows if r["kind"] == "train" and r["model"] == "ReferenceTransformer")
    assert (row["src_len"], row["tgt_len"]) == (8, 8)
    assert row["supervised_tokens_per_s"] == pytest.approx(
        row["tokens_per_s"] / 2, abs=0.1
    )  # both rounded to 0.1


def test_failed_compile_becomes_an_error_row(capsys, monkeypatch):
    def broken_compile(fn, **_):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", broken_compile)
    code, rows = run(capsys, "--modes", "compile", "--archs", "decoder-only")
    assert code == 1
    (row,) = rows
    assert row["mode"] == "compile" and "no C++ compiler" in row["error"]
    assert row["tokens_per_s"] is None and row["ratio"] is None


def test_table_output_is_readable(capsys):
    assert bench_main(SMOKE[:-1] + ["--modes", "eager", "--archs", "decoder-only"]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert "ratio" in header and "decoder-only" in row and "nano" in row


def test_paired_ratio_is_the_median_of_per_pair_speedups():
    r = paired_ratio([1.0, 2.0, 1.0, 1.0, 4.0], [2.0, 2.0, 1.5, 1.0, 2.0])  # peer/ours: 2, 1, 1.5, 1, 0.5
    assert (r["ratio_q1"], r["ratio"], r["ratio_q3"]) == (1.0, 1.0, 1.5)
    assert (
        r["ratio_ci_low"] is r["ratio_ci_high"] is None
    )  # 5 pairs cannot bound a median with 95% confidence
    r = paired_ratio([1.0] * 9, [0.9, 1.3, 1.1, 0.95, 1.2, 1.05, 1.0, 1.15, 0.98])
    assert (r["ratio_ci_low"], r["ratio"], r["ratio_ci_high"]) == (
        0.95,
        1.05,
        1.2,
    )  # 2nd smallest and largest


@pytest.mark.parametrize("n, k", [(6, 1), (9, 2), (10, 2), (16, 4), (24, 7)])
def test_median_ci_takes_the_binomial_order_statistics(n, k):
    """x_(k) and x_(n+1-k): the widest k whose two tails together hold at most 5% (binomial tables)."""
    assert median_ci(list(range(1, n + 1))[::-1]) == (k, n + 1 - k)
    assert median_ci(list(range(5))) is None


def test_median_ci_covers_the_median_at_least_95_percent_of_the_time():
    """Samples of 10 from a skewed distribution (exponential, median ln 2): the interval holds it >= 95%."""
    rng = random.Random(0)
    hits = sum(
        low <= math.log(2) <= high
        for _ in range(4000)
        for low, high in [median_ci([rng.expovariate(1.0) for _ in range(10)])]
    )
    assert 0.95 <= hits / 4000 <= 0.99  # exact coverage for n = 10 is 1 - 2 * 11/1024 = 0.979


def test_real_data_rows_compare_the_trainer_with_fixed_shapes(capsys):
    """The trainer on SAMSum vs on fixed-shape rows vs the bare step; ratios are consistent with the
    speeds."""
    real_data = ("--modes", "eager", "--archs", "encoder-decoder", "--real-data", "--steps", "2")
    code, rows = run(capsys, *real_data, "--seq-len", "16")
    assert code == 1 and "raise either" in rows[1]["error"]  # one step holds 32 tokens, dialogues are longer
    code, rows = run(capsys, *real_data, "--seq-len", "256")
    assert code == 0
    fixed, real = rows
    assert real["kind"] == "real-data" and real["data"] == "samsum" and real["error"] is None
    assert real["batch_tokens"] == 2 * 256 and real["fixed_tokens_per_s"] == fixed["tokens_per_s"]
    assert 0 < real["padding_waste"] < 1 and real["synthetic_padding_waste"] == 0
    assert real["ratio"] == pytest.approx(real["real_tokens_per_s"] / fixed["tokens_per_s"], rel=1e-2)
    assert real["data_ratio"] == pytest.approx(
        real["real_tokens_per_s"] / real["synthetic_tokens_per_s"], rel=1e-2
    )
    assert real["real_supervised_tokens_per_s"] < real["real_tokens_per_s"]


def test_timed_steps_and_generate_calls_alternate_in_counterbalanced_order(monkeypatch):
    """AB BA AB ...: with a fixed order each side would always run right after the other one."""
    calls = []
    monkeypatch.setattr(
        "tools.timing._train_step", lambda side, mode, device: lambda: calls.append(side.name)
    )
    sides = [
        Side(name, torch.nn.Linear(1, 1), None, lambda m, x, n=name: calls.append(n) or torch.zeros(1, 2))
        for name in "AB"
    ]
    monkeypatch.setattr("tools.timing._cpu_step_peak_bytes", lambda step: 0)
    time_training(sides, "eager", torch.device("cpu"), warmup=1, steps=4)
    assert "".join(calls) == "AB" + "ABBAABBA"  # warmup, then the timed steps
    calls.clear()
    times = time_generation(sides, torch.zeros(1, 1), torch.device("cpu"), repeats=3, new_tokens=2)
    assert "".join(calls) == "ABBAABBA" and [len(t) for t in times] == [3, 3]  # the first round is warmup


_REUSE_FAULTS = """
import ctypes, resource, torch
from tools.machine import keep_freed_cpu_memory
if not keep_freed_cpu_memory():
    print("unsupported")
    raise SystemExit
def faults_of_take_and_free():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(4 * 2**20) for _ in range(6)]  # 6 x 16 MiB, then all freed
    del tensors
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(6):  # the heap grows until the 96 MiB fit in its free space
    faults_of_take_and_free()
kept = [faults_of_take_and_free() for _ in range(4)]
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand every free page back to the OS, as glibc's trimming does
print(*kept, faults_of_take_and_free())
"""


def test_keep_freed_cpu_memory_keeps_freed_pages_in_the_process():
    """96 MiB freed and taken again: once the heap has grown, ``keep_freed_cpu_memory`` keeps its
    pages, so no round faults. Whether glibc's own trimming gives them back depends on where small
    allocations landed (process history), so the control is deterministic instead: after an explicit
    ``malloc_trim`` the same round faults on every page, which shows the counter sees handed-back pages."""
    out = subprocess.run(
        [sys.executable, "-c", _REUSE_FAULTS], capture_output=True, text=True, check=True
    ).stdout.split()
    if out == ["unsupported"]:
        pytest.skip("the C library is not glibc: no mallopt")
    *kept, after_trim = map(int, out)
    pages = 96 * 2**20 // 4096
    assert max(kept) < pages // 100, out  # the kept heap: (almost) no page faults again
    assert after_trim > pages // 2, out  # pages handed back fault again


def test_keep_freed_cpu_memory_sets_both_glibc_thresholds_and_reports_a_missing_libc(monkeypatch):
    """The behaviour test above can pass by luck when the heap layout already blocks trimming, so this
    one pins what the function asks of glibc, and that a C library without mallopt is reported, not hidden."""
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(machine_module.ctypes, "CDLL", lambda name: FakeLibc())
    assert machine_module.keep_freed_cpu_memory() is True
    assert calls == [(-3, 32 * 2**20), (-1, 2**31 - 1)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD

    def no_libc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(machine_module.ctypes, "CDLL", no_libc)
    assert machine_module.keep_freed_cpu_memory() is False


def test_malloc_trim_auto_keeps_memory_where_it_can_and_off_refuses_to_fall_back(monkeypatch):
    calls = []
    monkeypatch.setattr("tools.__main__.keep_freed_cpu_memory", lambda: calls.append(1) or True)
    assert [apply_malloc_trim(c) for c in ("auto", "off", "on")] == ["off", "off", "on"]
    assert len(calls) == 2  # "on" leaves glibc alone
    monkeypatch.setattr("tools.__main__.keep_freed_cpu_memory", lambda: False)  # not glibc
    assert apply_malloc_trim("auto") == "on"
    with pytest.raises(SystemExit, match="use auto or on"):
        apply_malloc_trim("off")


def test_malloc_trim_option_is_parsed():
    assert parse_args(["--device", "cpu"]).malloc_trim == "auto"
    assert parse_args(["--device", "cpu", "--malloc-trim", "on"]).malloc_trim == "on"
    assert parse_args(["--device", "cpu", "--malloc-trim", "off"]).malloc_trim == "off"
    with pytest.raises(SystemExit):
        parse_args(["--device", "cpu", "--malloc-trim", "maybe"])
