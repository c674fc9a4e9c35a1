"""The closing guidelines (notebook 08): each experiment's answer to "which architecture, when?", computed
from the stored results.

A guideline is a comparison: a measured difference against its noise, with a control that says the
difference means what it seems to, and a threshold. Written by hand in a notebook, such a sentence drifts
from the numbers when a run is redone; here it is computed from ``results/<experiment>/<budget>.json``
each time. Every field is read by name and may be missing (a ``smoke`` run stores little, an older run
stores other fields, and the stored results are re-run issue by issue), so a guideline says
"cannot decide" with the reason wherever a number, a seed or a control is absent, instead of failing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from course.attention import HYPOTHESIS_SIGN
from course.evaluation import DISTINCT_FLOOR
from course.report import FLAT
from course.results import load_results
from course.scaling import alpha_interval
from course.verdicts import range_verdict
from reftx_lib.train.evaluation import READS_MIN_DISTINCT_SHARE, READS_MIN_GAIN_NATS, READS_MIN_NAME_PRECISION

# A difference decides only beyond twice its noise: the course's rule (course.transfer, course.attention).
# Twice, because one noise unit is what two seeds of the same recipe already differ by.
NOISE_MULTIPLE = 2.0
# The seed's Exp 1 predictions, encoder-decoder / decoder-only at the same size (notebook 04's table).
SEED_PREDICTIONS = {"perplexity": (2.0, 3.0), "time": (1.5, 2.0), "memory": (1.3, 1.5), "params": (0.9, 1.1)}
KAPLAN_ALPHA_N = 0.076  # Kaplan et al. 2020: loss against non-embedding parameters, converged large LMs
CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: a compute-optimal run sees about 20 per parameter
# Bytes of training state per parameter in Exp 1's memory measurement: an fp32 gradient and AdamW's two
# fp32 moments (notebook 04, section 4).
STATE_BYTES_PER_PARAM = 12
# The notebook that stores each experiment (notebooks/CONVENTIONS.md's table); the bench comes from tools/.
NOTEBOOK_OF = {"samsum_baseline": "02", "exp2": "03", "exp1": "04", "exp3": "05", "exp4": "06", "exp5": "07"}
EXPERIMENTS = ("exp1", "exp2", "samsum_baseline", "exp3", "exp4", "exp5", "bench")


@dataclass(frozen=True)
class Number:
    """One input of a guideline: what it is for (``role``: measured, control, noise, threshold,
    prediction or reference), its value (None where the stored result lacks it) and the run it was read
    from, so that every number a verdict rests on can be traced to a commit and a machine."""

    role: str
    name: str
    value: float | str | None
    run: str = "the course"
    fmt: str = "{:.3f}"

    def shown(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "—"
        return self.fmt.format(self.value) if isinstance(self.value, (int, float)) else str(self.value)


@dataclass
class Guideline:
    """A computed guideline: its inputs, the comparisons made with them, the decision (``verdict``, or
    "cannot decide: why"), the sentence a reader takes away, and how far the evidence carries it."""

    title: str
    numbers: list[Number] = field(default_factory=list)
    comparisons: list[str] = field(default_factory=list)
    verdict: str = "cannot decide"
    sentence: str = ""
    strength: str = "none"
    evidence: str = "—"
    runs: dict[str, str] = field(default_factory=dict)


# ---- reading the stored results ------------------------------------------------------------------


def bench_name(budget: str) -> str:
    """The speed benchmark is stored per kind of device (``results/bench/cpu.json``), not per budget: a
    budget's guidelines read the benchmark of the device that budget runs on."""
    return "gpu" if budget.startswith("gpu") else "cpu"


def missing_line(experiment: str, budget: str) -> str:
    """What a reader must do when a stored result is absent: the notebook (or tool) that writes it."""
    source = f"notebook {NOTEBOOK_OF[experiment]}" if experiment in NOTEBOOK_OF else "`make bench` (tools/)"
    return f"no stored {experiment} result for budget {budget}: run {source}"


def load_stored(budget: str) -> tuple[dict[str, dict | None], list[str]]:
    """Every experiment's stored result at ``budget`` (None where absent), and one line per experiment
    naming the run found or what to run: the notebook's first output says what it stands on."""
    stored, lines = {}, []
    for name in EXPERIMENTS:
        key = bench_name(budget) if name == "bench" else budget
        stored[name] = load_results(name, key)
        lines.append(f"{name}: {run_line(stored[name])}" if stored[name] else missing_line(name, key))
    return stored, lines


def pick(stored: dict | None, *path):
    """``stored["metrics"][path[0]][path[1]]...``, or None where any step is missing: a field that a run
    did not store is a gap to report, not an error."""
    node = (stored or {}).get("metrics")
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def run_line(stored: dict | None) -> str:
    """A stored result's provenance in one line: budget, commit, date, device (older runs say "preset")."""
    p = (stored or {}).get("provenance") or {}
    budget = p.get("budget", p.get("preset", "?"))
    return f"budget {budget}, commit {p.get('commit', '?')}, {p.get('date', '?')}, {p.get('device', '?')}"


def runs_of(**stored: dict | None) -> dict[str, str]:
    """The provenance line of each run a guideline reads, keyed by experiment."""
    return {name: run_line(s) for name, s in stored.items() if s is not None}


def by_float_key(values: dict | None) -> dict[float, object]:
    """A dict keyed by fractions or seeds written as text ("0.1", "1.0", "1") keyed by float instead, so
    that "1" and "1.0" name the same fraction."""
    out = {}
    for key, value in (values or {}).items():
        try:
            out[float(key)] = value
        except ValueError:
            continue
    return out


def per_seed(stored: dict | None, by_seed: str, mean: str) -> list[float]:
    """A ratio's value per seed (``verdicts[by_seed]``), or its one stored value (older runs stored only
    ``verdicts[mean]``): one value gives no noise estimate, and the verdict will say so."""
    values = [float(v) for v in by_float_key(pick(stored, "verdicts", by_seed)).values() if v is not None]
    one = pick(stored, "verdicts", mean)
    return values or ([float(one)] if one is not None else [])


def flattened(stored: dict | None) -> bool | None:
    """True when every stored validation curve fell by less than ``FLAT`` over its last quarter (more steps
    would not move it), None when the run stored no such numbers."""
    falls = pick(stored, "last_quarter_improvement")
    if not isinstance(falls, dict) or not falls:
        return None
    return all(v is not None and v < FLAT for v in falls.values())


# ---- comparing -----------------------------------------------------------------------------------


def span(key: str) -> str:
    """A seed prediction's range as text: "2–3"."""
    low, high = SEED_PREDICTIONS[key]
    return f"{low:g}–{high:g}"


def seed_spread(values: Sequence[float | None]) -> float | None:
    """The largest minus the smallest seed's value: the noise of a recipe; None from fewer than two seeds
    (one seed cannot show that a difference is not noise)."""
    values = [v for v in values if v is not None]
    return max(values) - min(values) if len(values) > 1 else None


def and_join(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c": lists in sentences."""
    items = list(items)
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def judge(diff: float | None, noise: float | None, multiple: float = NOISE_MULTIPLE) -> str:
    """``above`` / ``below`` when ``diff`` exceeds ``multiple`` times the noise either way, ``within``
    otherwise; ``no noise`` without a noise estimate, ``missing`` without the difference."""
    if _nan(diff):
        return "missing"
    if _nan(noise):
        return "no noise"
    if diff > multiple * noise:
        return "above"
    return "below" if diff < -multiple * noise else "within"


def compare_line(what: str, diff: float | None, noise: float | None, multiple: float, outcome: str) -> str:
    """A comparison as a reader checks it: the difference, the threshold, the outcome."""
    if _nan(diff):
        return f"{what}: not stored"
    if _nan(noise):
        return f"{what} = {diff:+.3f}; no noise estimate" + ("" if "noise" in outcome else f": {outcome}")
    return f"{what} = {diff:+.3f} against ±{multiple:g} × {noise:.3f} = ±{multiple * noise:.3f}: {outcome}"


def strength(decided: bool, caveats: Sequence[str] = (), failed: str | None = None) -> str:
    """How far the evidence carries a guideline. ``none``: it cannot decide. ``weak``: it decides, but a
    precondition fails (a curve still falling), so the number may not mean what it seems. ``moderate``:
    it decides, with caveats (one seed somewhere, one measurement without noise, a bound instead of an
    estimate). ``strong``: beyond the noise, from several seeds, on flattened curves, with no caveat."""
    if not decided:
        return "none"
    if failed:
        return f"weak: {failed}"
    return "moderate: " + "; ".join(caveats) if caveats else "strong"


def flat_caveat(*stored: dict | None) -> tuple[str | None, list[str]]:
    """(failed precondition, caveats) from the runs' flattening: a curve still falling fails the
    precondition (more steps would move the numbers); a run that stored no curves is a caveat."""
    states = [flattened(s) for s in stored]
    if any(state is False for state in states):
        return "a validation curve had not flattened", []
    return None, (["flattening not stored"] if any(state is None for state in states) else [])


def absent(title: str, *names: str) -> Guideline:
    """The guideline of experiments with no stored result: it cannot decide, and says what to run."""
    todo = " and ".join(f"notebook {NOTEBOOK_OF[n]}" if n in NOTEBOOK_OF else "`make bench`" for n in names)
    return Guideline(
        title,
        verdict=f"cannot decide: no stored {' or '.join(names)} result",
        sentence=f"Cannot decide: no stored result of {' or '.join(names)} at this budget; run {todo}.",
    )


# ---- 1. raw text: which architecture? --------------------------------------------------------------


def raw_text_guideline(exp1: dict | None, exp2: dict | None, multiple: float = NOISE_MULTIPLE) -> Guideline:
    """Exp 1, with Exp 2's baseline: for next-token prediction on raw text, encoder-decoder or decoder-only?

    Measured: the encoder-decoder's second-half perplexity over the decoder-only model's, per seed; noise:
    that ratio's seed spread. Controls: the unigram floor (models that learned nothing compare to nothing),
    and the prefix LM, a decoder-only stack that learns the encoder-decoder's very targets: it separates
    what the objective costs from what the architecture costs.
    """
    title = "Next-token prediction on raw text (Exp 1, Exp 2)"
    if exp1 is None:
        return absent(title, "exp1")
    ratios = per_seed(exp1, "perplexity_ratio_by_seed", "perplexity_ratio")
    enc, dec = pick(exp1, "encdec", "ppl_second_half"), pick(exp1, "deconly", "ppl_second_half")
    unigram, prefix = pick(exp1, "unigram_ppl_second_half"), pick(exp1, "prefix_lm", "ppl_second_half")
    noise = seed_spread(ratios)
    g = Guideline(title, runs=runs_of(exp1=exp1, exp2=exp2))
    g.numbers = _raw_text_numbers(exp1, exp2, noise, multiple)
    if not ratios:
        g.verdict = "cannot decide: the stored exp1 result holds no perplexity ratio"
        g.sentence = "Cannot decide: the stored exp1 result holds no perplexity ratio; rerun notebook 04."
        return g
    learned = None not in (enc, dec, unigram) and max(enc, dec) < unigram
    if None not in (enc, dec, unigram):
        g.comparisons.append(
            f"unigram / enc-dec = {unigram / enc:.1f}×, unigram / dec-only = {unigram / dec:.1f}×: "
            + ("both models learned" if learned else "a model is no better than the unigram floor")
        )
    mean = sum(ratios) / len(ratios)
    outcome = judge(mean - 1, noise, multiple)
    winner = {"above": "decoder-only", "below": "encoder-decoder"}.get(outcome)
    g.comparisons.append(compare_line("mean ratio - 1", mean - 1, noise, multiple, f"{winner or outcome}"))
    prediction = range_verdict(ratios, *SEED_PREDICTIONS["perplexity"])
    g.comparisons.append(f"every seed's ratio inside {span('perplexity')}×? {prediction}")
    g.sentence = _raw_text_sentence(winner, ratios, noise, multiple, prediction)
    if winner == "decoder-only" and enc is not None and prefix is not None:
        g.sentence += " " + _prefix_sentence(enc / prefix, noise, multiple, g.comparisons)
    failed, caveats = flat_caveat(exp1)
    if not learned:
        failed = failed or "a model did not beat the unigram floor, or the floor was not stored"
    g.verdict = (
        f"use a {winner} model"
        if winner
        else "cannot decide: " + ("one seed, no noise estimate" if noise is None else "within the seed noise")
    )
    g.strength = strength(winner is not None, caveats, failed)
    g.evidence = f"2nd-half perplexity ratio {mean:.2f}" + (
        f" (seeds {min(ratios):.2f}–{max(ratios):.2f}; threshold ±{multiple * noise:.3f})" if noise else ""
    )
    return g


def _raw_text_numbers(exp1: dict, exp2: dict | None, noise: float | None, multiple: float) -> list[Number]:
    """Guideline 1's inputs: the ratio per seed, the perplexities behind it, the controls, the noise."""
    seeds = by_float_key(pick(exp1, "verdicts", "perplexity_ratio_by_seed"))
    enc, dec = pick(exp1, "encdec", "ppl_second_half"), pick(exp1, "deconly", "ppl_second_half")
    unigram, prefix = pick(exp1, "unigram_ppl_second_half"), pick(exp1, "prefix_lm", "ppl_second_half")
    return [
        *(
            Number("measured", f"2nd-half perplexity, enc-dec / dec-only, seed {s:g}", v, "exp1")
            for s, v in seeds.items()
        ),
        Number("measured", "encoder-decoder 2nd-half perplexity (seed 0)", enc, "exp1", "{:.1f}"),
        Number("control", "decoder-only 2nd-half perplexity (seed 0)", dec, "exp1", "{:.1f}"),
        Number("control", "unigram 2nd-half perplexity (the floor)", unigram, "exp1", "{:.1f}"),
        Number("control", "prefix LM 2nd-half perplexity (same targets; one seed)", prefix, "exp1", "{:.1f}"),
        Number("control", "Exp 2 decoder-only test perplexity", pick(exp2, "test_ppl"), "exp2", "{:.1f}"),
        Number("control", "Exp 2 unigram test perplexity", pick(exp2, "unigram_test_ppl"), "exp2", "{:.1f}"),
        Number("noise", "seed spread of the ratio (max - min)", noise, "exp1"),
        Number(
            "threshold", "a difference decides beyond ±", None if noise is None else multiple * noise, "exp1"
        ),
        Number("prediction", "the seed's enc-dec / dec-only perplexity", f"{span('perplexity')}×"),
    ]


def _raw_text_sentence(
    winner: str | None, ratios: list[float], noise, multiple: float, prediction: str
) -> str:
    """Guideline 1's sentence from its comparisons."""
    mean = sum(ratios) / len(ratios)
    seeds = f"seeds {min(ratios):.2f}–{max(ratios):.2f}" if len(ratios) > 1 else "one seed"
    measured = (
        f"the encoder-decoder's second-half perplexity is {mean:.2f}× the decoder-only model's ({seeds})"
    )
    tail = f" The seed's prediction of {span('perplexity')}× {prediction}."
    if winner is None:
        why = "with no noise estimate" if noise is None else f"within {multiple:g}× the seed spread"
        return f"Cannot decide: {measured}, {why}." + tail
    return (
        f"For next-token prediction on raw text, use a {winner} model: {measured}, beyond {multiple:g}× the "
        f"seed spread ({multiple:g} × {noise:.3f})." + tail
    )


def _prefix_sentence(enc_over_prefix: float, noise: float, multiple: float, comparisons: list[str]) -> str:
    """What the prefix LM control says: is the gap the objective's (half the targets) or the architecture's?
    It has one seed, so the enc-dec / dec-only ratio's seed spread stands in for its noise."""
    outcome = judge(enc_over_prefix - 1, noise, multiple)
    comparisons.append(compare_line("enc-dec / prefix LM - 1", enc_over_prefix - 1, noise, multiple, outcome))
    if outcome == "above":
        return (
            "A decoder-only stack that learns the same second-half targets (the prefix LM) does better "
            f"({enc_over_prefix:.2f}×): part of the gap is the encoder-decoder's architecture."
        )
    return (
        "A decoder-only stack that learns the same second-half targets (the prefix LM) does no better "
        f"(enc-dec / prefix LM {enc_over_prefix:.2f}×): the gap comes from learning from half the tokens, "
        "not from cross-attention."
    )


# ---- 2. what the encoder-decoder costs ---------------------------------------------------------------


SPEED_WORDS = {
    "above": "slower",
    "below": "faster",
    "within": "the same within the noise",
    "no noise": "one seed, no noise estimate",
}


def bench_ratios(bench: dict | None, mode: str = "eager") -> list[dict]:
    """Encoder-decoder / decoder-only training step time and peak memory per size, from the speed
    benchmark's rows on equal shapes, smallest model first. A ratio's timing noise is half the two rows'
    relative 95% intervals added; each interval is of a row's speed against its Hugging Face peer, so
    this overstates the noise: the threshold errs towards "cannot decide"."""
    rows = [r for r in pick(bench, "rows") or [] if r.get("kind") == "train" and r.get("mode") == mode]
    by = {(r.get("arch"), r.get("config")): r for r in rows if not r.get("error") and r.get("ms_per_step")}
    out = []
    for size in dict.fromkeys(r.get("config") for r in rows):
        enc, dec = by.get(("encoder-decoder", size)), by.get(("decoder-only", size))
        if not enc or not dec:
            continue
        widths = [_relative_half_width(r) for r in (enc, dec)]
        mem = (enc.get("peak_mem_mib"), dec.get("peak_mem_mib"))
        out.append(
            {
                "size": size,
                "params": dec.get("params") or 0,
                "time": enc["ms_per_step"] / dec["ms_per_step"],
                "time_noise": None if None in widths else sum(widths) / 2,
                "memory": mem[0] / mem[1] if None not in mem and mem[1] else None,
            }
        )
    return sorted(out, key=lambda r: r["params"])


def _relative_half_width(row: dict) -> float | None:
    """Half a row's 95% interval of its speed ratio, relative to that ratio."""
    lo, hi, ratio = row.get("ratio_ci_low"), row.get("ratio_ci_high"), row.get("ratio")
    return (hi - lo) / 2 / ratio if None not in (lo, hi, ratio) and ratio else None


def memory_resolution(exp1: dict | None) -> tuple[float, float] | None:
    """(measured, least possible) difference in peak training memory, encoder-decoder minus decoder-only,
    in MiB. Exp 1's measurement holds the gradients and AdamW moments (``STATE_BYTES_PER_PARAM``), so the
    encoder-decoder's extra parameters must add at least their state; a measured difference below that
    does not resolve what it measures (a floor of the allocator hides the activations), and the memory
    prediction cannot be judged at that size. None where the run stored no absolute peaks."""
    peaks = (pick(exp1, "encdec", "peak_mem_mb"), pick(exp1, "deconly", "peak_mem_mb"))
    params = (pick(exp1, "encdec", "total_parameters"), pick(exp1, "deconly", "total_parameters"))
    if None in peaks or None in params:
        return None
    return peaks[0] - peaks[1], STATE_BYTES_PER_PARAM * (params[0] - params[1]) / 2**20


def cost_guideline(exp1: dict | None, bench: dict | None, multiple: float = NOISE_MULTIPLE) -> Guideline:
    """Exp 1's other three predictions, with the speed benchmark for the sizes Exp 1 did not train: what
    does the encoder-decoder cost in step time, memory and parameters, against the decoder-only model?

    Step time is measured per seed in Exp 1 (noise: the seed spread) and per size on equal shapes in the
    benchmark (noise: its timing intervals); peak memory once per model, with no noise estimate, and in
    Exp 1 judged only where it resolves the parameter state (``memory_resolution``).
    """
    title = "The encoder-decoder's cost: step time, memory, parameters (Exp 1, benchmark)"
    if exp1 is None and bench is None:
        return absent(title, "exp1", "bench")
    sizes = bench_ratios(bench)
    g = Guideline(title, runs=runs_of(exp1=exp1, bench=bench))
    size = (((exp1 or {}).get("provenance") or {}).get("config") or {}).get("hp", {}).get("model", "Exp 1")
    parts, decided = _exp1_cost(g, exp1, size, multiple)
    for r in sizes:
        g.numbers += [
            Number("measured", f"bench step time, enc-dec / dec-only, {r['size']}", r["time"], "bench"),
            Number("noise", f"bench timing noise, {r['size']}", r["time_noise"], "bench"),
            Number("measured", f"bench peak memory, enc-dec / dec-only, {r['size']}", r["memory"], "bench"),
        ]
    g.numbers += [
        Number("prediction", f"the seed's {k} ratio", f"{span(k)}×") for k in ("time", "memory", "params")
    ]
    bench_part, bench_decided = _bench_cost(g, sizes, multiple)
    g.sentence = " ".join([*parts, bench_part])
    held = [c.split(":")[0] for c in g.comparisons if c.endswith(": holds")]
    g.verdict = (
        (
            "a predicted range holds: " + "; ".join(held)
            if held
            else "the seed's cost predictions fail where measured"
        )
        if decided or bench_decided
        else "cannot decide: no cost ratio beyond its noise"
    )
    caveats = (
        ["memory: one measurement per model, no noise estimate"] if sizes or pick(exp1, "verdicts") else []
    )
    if any("not resolved" in c for c in g.comparisons):
        caveats.append(f"memory cannot be judged at {size}")
    if len({(s or {}).get("provenance", {}).get("device") for s in (exp1, bench) if s}) > 1:
        caveats.append("the benchmark ran on another machine than Exp 1")
    g.strength = strength(decided or bench_decided, caveats)
    times = per_seed(exp1, "time_ratio_by_seed", "time_ratio")
    evidence = [f"{size} step time {sum(times) / len(times):.2f}×"] if times else []
    if sizes:
        first, last = sizes[0], sizes[-1]
        evidence.append(
            f"bench {first['time']:.2f}× ({first['size']}) to {last['time']:.2f}× ({last['size']})"
        )
    g.evidence = "; ".join(evidence) or "—"
    return g


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _exp1_cost(g: Guideline, exp1: dict | None, size: str, multiple: float) -> tuple[list[str], bool]:
    """The cost inputs and comparisons at Exp 1's size: step time against its seed noise and the predicted
    range, memory (where the measurement resolves it) and parameters against theirs. Returns the
    sentences and whether the time comparison decided."""
    times = per_seed(exp1, "time_ratio_by_seed", "time_ratio")
    noise = seed_spread(times)
    memory, params = pick(exp1, "verdicts", "memory_ratio"), pick(exp1, "verdicts", "param_ratio")
    ne = _ratio(
        pick(exp1, "encdec", "non_embedding_parameters"), pick(exp1, "deconly", "non_embedding_parameters")
    )
    resolution = memory_resolution(exp1)
    g.numbers += [
        *(
            Number("measured", f"step time, enc-dec / dec-only, {size}, seed {i}", t, "exp1")
            for i, t in enumerate(times)
        ),
        Number("noise", f"seed spread of the time ratio, {size}", noise, "exp1"),
        Number("measured", f"peak training memory, enc-dec / dec-only, {size}", memory, "exp1"),
        Number(
            "measured",
            f"peak training memory, enc-dec - dec-only, {size} (MiB)",
            resolution and resolution[0],
            "exp1",
        ),
        Number(
            "control",
            f"gradient and AdamW state of the extra parameters, {size} (MiB)",
            resolution and resolution[1],
            "exp1",
        ),
        Number("measured", f"total parameters, enc-dec / dec-only, {size}", params, "exp1"),
        Number("measured", f"non-embedding parameters, enc-dec / dec-only, {size}", ne, "exp1"),
    ]
    parts, decided = _time_part(g, times, noise, size, multiple)
    if resolution is not None and resolution[0] < resolution[1]:
        parts.append(_unresolved_memory(g, *resolution, size))
        memory = None
    for key, value, what in (
        ("memory", memory, "peak training memory"),
        ("params", params, "parameter count"),
    ):
        if value is not None:
            verdict = range_verdict([value], *SEED_PREDICTIONS[key])
            g.comparisons.append(f"{size} {what} ratio {value:.2f} inside {span(key)}×: {verdict}")
            parts.append(f"Its {what} is {value:.2f}× (predicted {span(key)}×: {verdict}).")
    if ne is not None:
        parts.append(f"Without the shared embedding, it has {ne:.2f}× the parameters.")
    return parts, decided


def _time_part(g: Guideline, times: list[float], noise, size: str, multiple: float) -> tuple[list[str], bool]:
    """Exp 1's step-time ratio against its seed noise and the seed's range: the sentence and whether it
    decided."""
    parts, decided = [], False
    if times:
        mean = sum(times) / len(times)
        outcome = judge(mean - 1, noise, multiple)
        word = SPEED_WORDS.get(outcome, outcome)
        g.comparisons.append(compare_line(f"{size} time ratio - 1", mean - 1, noise, multiple, word))
        verdict = range_verdict(times, *SEED_PREDICTIONS["time"])
        g.comparisons.append(f"{size} time ratio inside {span('time')}×: {verdict}")
        decided = outcome in ("above", "below")
        parts.append(
            f"At Exp 1's size ({size}) an encoder-decoder training step takes {mean:.2f}× the decoder-only "
            f"step's time ({word}); the seed's prediction of {span('time')}× {verdict}."
        )
    return parts, decided


def _unresolved_memory(g: Guideline, seen: float, least: float, size: str) -> str:
    """Why Exp 1's memory ratio is not judged: its difference is below the state it must contain."""
    g.comparisons.append(
        f"{size} memory difference {seen:.2f} MiB against the {least:.2f} MiB of state the extra "
        "parameters must add: not resolved"
    )
    return (
        f"Its memory cannot be judged at this size: the two models' peaks differ by {seen:.2f} MiB, less "
        f"than the {least:.2f} MiB of gradients and AdamW moments that the encoder-decoder's extra "
        "parameters must add, so the measurement sits on a floor that hides them."
    )


def _bench_cost(g: Guideline, sizes: list[dict], multiple: float) -> tuple[str, bool]:
    """The cost comparisons per benchmark size: the time ratio against its timing noise and the predicted
    range, the memory ratio against its range; the sentence names the size from which the
    encoder-decoder is slower."""
    if not sizes:
        return "No speed benchmark of other sizes is stored.", False
    outcomes = []
    for r in sizes:
        outcomes.append(judge(r["time"] - 1, r["time_noise"], multiple))
        word = SPEED_WORDS.get(outcomes[-1], outcomes[-1])
        g.comparisons.append(
            compare_line(f"bench {r['size']} time ratio - 1", r["time"] - 1, r["time_noise"], multiple, word)
        )
        inside = range_verdict([r["time"]], *SEED_PREDICTIONS["time"])
        g.comparisons.append(f"bench {r['size']} time ratio inside {span('time')}×: {inside}")
        if r["memory"] is not None:
            verdict = range_verdict([r["memory"]], *SEED_PREDICTIONS["memory"])
            g.comparisons.append(
                f"bench {r['size']} memory ratio {r['memory']:.2f} inside {span('memory')}×: {verdict}"
            )
    slower = [o == "above" for o in outcomes]
    first = next((r["size"] for i, r in enumerate(sizes) if all(slower[i:])), None)
    mems = [r["memory"] for r in sizes if r["memory"] is not None]
    return (
        f"On equal shapes in the speed benchmark, the step time ratio goes from {sizes[0]['time']:.2f}× "
        f"({sizes[0]['size']}) to {sizes[-1]['time']:.2f}× ({sizes[-1]['size']}), "
        + (
            f"slower beyond the timing noise from {first} up"
            if first
            else "not slower beyond the noise at the top"
        )
        + (f", and peak memory {min(mems):.2f}–{max(mems):.2f}×." if mems else "."),
        any(o in ("above", "below") for o in outcomes),
    )


# ---- 3. the SAMSum baseline: does it read? ---------------------------------------------------------

GATE_NAMES = {
    "gain": "ablation gain",
    "distinct": "distinct greedy summaries",
    "names": "speaker-name precision",
}
GATE_FORMATS = {"gain": "{:+.3f}", "distinct": "{:.0%}", "names": "{:.0%}"}


def gate_thresholds(samsum: dict | None) -> dict[str, float]:
    """The source-use gate's thresholds as the stored run applied them, else the library's constants."""
    stored = pick(samsum, "source_use", "thresholds") or {}
    defaults = {
        "gain": READS_MIN_GAIN_NATS,
        "distinct": READS_MIN_DISTINCT_SHARE,
        "names": READS_MIN_NAME_PRECISION,
    }
    return {k: stored.get(k, v) for k, v in defaults.items()}


def same_checkpoint(samsum: dict | None, exp3: dict | None) -> bool:
    """Did Exp 3 measure the very model notebook 02 stored? Exp 3 reuses notebook 02's checkpoint, and the
    two runs then store the same best validation loss to the last digit."""
    a, b = pick(samsum, "best_val_loss"), pick(exp3, "best_val_loss", "samsum")
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12)


def gate_numbers(samsum: dict | None, exp3: dict | None) -> tuple[dict[str, float | None], str]:
    """The gate's three numbers and the run they come from: the stored gate (``metrics.source_use``), else
    Exp 3's ablation of the same checkpoint (the gain only), else nothing."""
    gate = pick(samsum, "source_use")
    if isinstance(gate, dict):
        keys = {
            "gain": "ablation_gain_nats",
            "distinct": "distinct_share_greedy",
            "names": "speaker_name_precision",
        }
        return {k: gate.get(v) for k, v in keys.items()}, "samsum_baseline"
    gain = pick(exp3, "source_ablation", "SAMSum, trained", "gain")
    if gain is not None and same_checkpoint(samsum, exp3):
        return {"gain": gain, "distinct": None, "names": None}, "exp3"
    return {"gain": None, "distinct": None, "names": None}, ""


def samsum_guideline(samsum: dict | None, exp3: dict | None) -> Guideline:
    """Notebook 02: does the from-scratch encoder-decoder read its dialogue, and does its ROUGE count?

    The gate reads when all three numbers reach their thresholds, so one number below its threshold
    decides "does not read" alone, while "reads" needs all three. ROUGE is compared with LONGEST-3 only
    for a model that reads: a language model of summaries scores words, not readings.
    """
    title = "Summarization: does the SAMSum baseline read its dialogue? (notebook 02)"
    if samsum is None:
        return absent(title, "samsum_baseline")
    values, source = gate_numbers(samsum, exp3)
    limits = gate_thresholds(samsum)
    rouge, longest = pick(samsum, "rouge", "rouge1"), pick(samsum, "longest3", "rouge1")
    g = Guideline(title, runs=runs_of(samsum_baseline=samsum, **({"exp3": exp3} if source == "exp3" else {})))
    for k, name in GATE_NAMES.items():
        g.numbers.append(Number("measured", name, values[k], source or "samsum_baseline", GATE_FORMATS[k]))
        g.numbers.append(
            Number(
                "threshold",
                f"the gate asks for {name} of at least",
                limits[k],
                fmt=GATE_FORMATS[k].replace("+", ""),
            )
        )
    g.numbers += [
        Number("measured", "test ROUGE-1", rouge, "samsum_baseline", "{:.1f}"),
        Number("control", "LONGEST-3 test ROUGE-1", longest, "samsum_baseline", "{:.1f}"),
    ]
    missing = [GATE_NAMES[k] for k, v in values.items() if v is None]
    short = [GATE_NAMES[k] for k, v in values.items() if v is not None and v < limits[k]]
    for k, v in values.items():
        if v is not None:
            fmt = GATE_FORMATS[k]
            outcome = "passes" if v >= limits[k] else "misses"
            limit = fmt.replace("+", "").format(limits[k])
            g.comparisons.append(f"{GATE_NAMES[k]} {fmt.format(v)} against {limit}: {outcome}")
    reads = False if short else (None if missing else True)
    g.verdict = {True: "reads its dialogue", False: "does not read its dialogue"}.get(
        reads,
        "cannot decide: " + ("no gate stored" if len(missing) == 3 else f"{and_join(missing)} not stored"),
    )
    g.sentence = _samsum_sentence(reads, values, limits, short, missing, source)
    g.sentence += _rouge_sentence(reads, rouge, longest, g.comparisons)
    failed, caveats = flat_caveat(samsum)
    caveats.append("one run, no seed noise")
    if missing and reads is False:
        caveats.append(f"{3 - len(missing)} of the gate's 3 numbers stored")
    g.strength = strength(reads is not None, caveats, failed)
    g.evidence = "; ".join(c for c in g.comparisons if not c.startswith("ROUGE")) or "—"
    return g


def _samsum_sentence(reads, values, limits, short, missing, source) -> str:
    """Guideline 3's decision in words, with the numbers that made it."""
    origin = (
        " (Exp 3's ablation of the same checkpoint: the stored run predates the gate)"
        if source == "exp3"
        else ""
    )
    gain = values["gain"]
    if reads is None and len(missing) == 3:
        return (
            "Cannot decide whether the SAMSum baseline reads its dialogue: no gate and no ablation of its "
            "checkpoint are stored; rerun notebook 02."
        )
    if reads is None:
        return (
            "Cannot decide whether the SAMSum baseline reads its dialogue: it passes what was measured"
            f"{origin}, but its {and_join(missing)} were not stored."
        )
    if reads:
        return "The SAMSum baseline reads its dialogue: it reaches all three thresholds of the gate."
    cost = (
        f" (another dialogue costs it {gain:+.3f} nats per summary token; the gate asks for "
        f"{limits['gain']:g})"
        if gain is not None and gain < limits["gain"]
        else ""
    )
    return (
        "The from-scratch encoder-decoder baseline does not read its dialogue: it misses the gate on its "
        f"{and_join(short)}{cost}{origin}."
    )


def _rouge_sentence(
    reads: bool | None, rouge: float | None, longest: float | None, comparisons: list[str]
) -> str:
    """What ROUGE may say: against LONGEST-3 for a model that reads, nothing for one that does not."""
    if rouge is None or longest is None:
        return ""
    comparisons.append(f"ROUGE-1 - LONGEST-3's = {rouge - longest:+.1f} points (one run, no noise estimate)")
    if reads:
        return f" Its test ROUGE-1 is {rouge:.1f} against LONGEST-3's {longest:.1f} (one run)."
    return (
        f" Its test ROUGE-1 ({rouge:.1f}; LONGEST-3 {longest:.1f}) ranks nothing: a summarizer passes the "
        "gate before its ROUGE counts, and until one does, these runs cannot say that the encoder-decoder "
        "summarizes rather than writes summaries."
    )


# ---- 4. attention structure --------------------------------------------------------------------------


def contrast_verdict(trained, control, spread, sign: int, multiple: float = NOISE_MULTIPLE) -> str:
    """Exp 3's rule (``course.attention.corpus_contrast``) for one statistic: the effect of training
    (SAMSum minus raw text for trained models, minus the same for untrained ones) supports the hypothesis
    only beyond ``multiple`` raw-text seed spreads, with the hypothesised sign, and when the trained
    models themselves differ that way beyond the noise too."""
    if trained is None or control is None:
        return "cannot decide: not stored"
    if _nan(spread):
        return "cannot decide: one seed, no noise estimate"
    effect = trained - control
    if abs(effect) <= multiple * spread:
        return "within noise"
    if effect * sign > 0 and trained * sign <= multiple * spread:
        return "cannot decide: only the untrained control's difference makes the effect"
    return "as hypothesised" if effect * sign > 0 else "opposite to the hypothesis"


def _contrast_comparisons(g: Guideline, exp3: dict, multiple: float) -> dict[str, str]:
    """Exp 3's three statistics: their inputs (trained difference, untrained control, seed spread) and
    comparisons added to ``g``; returns each statistic's verdict."""
    outcomes = {}
    for stat, sign in HYPOTHESIS_SIGN.items():
        row = pick(exp3, "contrast", stat) or {}
        trained, control = row.get("SAMSum − raw, trained"), row.get("SAMSum − raw, untrained")
        spread = None if _nan(row.get("raw-text seed spread")) else row.get("raw-text seed spread")
        g.numbers += [
            Number(
                "measured",
                f"{stat}: SAMSum - raw, trained (hypothesis: {'lower' if sign < 0 else 'higher'})",
                trained,
                "exp3",
                "{:+.4f}",
            ),
            Number("control", f"{stat}: SAMSum - raw, untrained", control, "exp3", "{:+.4f}"),
            Number("noise", f"{stat}: raw-text seed spread", spread, "exp3", "{:.4f}"),
        ]
        outcomes[stat] = contrast_verdict(trained, control, spread, sign, multiple)
        effect = None if trained is None or control is None else trained - control
        g.comparisons.append(
            compare_line(f"{stat}: effect of training", effect, spread, multiple, outcomes[stat])
        )
    return outcomes


def attention_guideline(
    exp3: dict | None, samsum: dict | None, multiple: float = NOISE_MULTIPLE
) -> Guideline:
    """Exp 3: is cross-attention more structured on the task it was built for (SAMSum) than on raw text?

    Per statistic: the trained models' SAMSum-minus-raw difference, the untrained control's, and the
    raw-text seed spread. Precondition: the SAMSum model reads its dialogue (the gate's ablation gain);
    the attention of a model that does not is that of a model that has not learned the task.
    """
    title = "Attention structure: is cross-attention sharper on SAMSum than on raw text? (Exp 3)"
    if exp3 is None:
        return absent(title, "exp3")
    g = Guideline(title, runs=runs_of(exp3=exp3))
    outcomes = _contrast_comparisons(g, exp3, multiple)
    gain = pick(exp3, "source_ablation", "SAMSum, trained", "gain")
    ablation = pick(exp3, "source_ablation") or {}
    raw = [
        v.get("gain")
        for k, v in ablation.items()
        if k.startswith("raw text, seed") and v.get("gain") is not None
    ]
    limit = gate_thresholds(samsum)["gain"]
    g.numbers += [
        Number("measured", "SAMSum model: ablation gain (nats)", gain, "exp3", "{:+.3f}"),
        Number("threshold", "the gate asks for an ablation gain of at least", limit),
        Number(
            "control",
            "raw-text encoder-decoder: ablation gain, mean of seeds",
            sum(raw) / len(raw) if raw else None,
            "exp3",
            "{:+.3f}",
        ),
        Number("noise", "raw-text ablation gain: seed spread", seed_spread(raw), "exp3"),
    ]
    reads = None if gain is None else gain >= limit
    if gain is not None:
        word = "reads" if reads else "does not read"
        g.comparisons.append(f"SAMSum model's ablation gain {gain:+.3f} against {limit:g}: {word}")
    g.verdict, g.sentence = _attention_verdict(outcomes, reads, gain, limit, raw, multiple, g.comparisons)
    failed, caveats = flat_caveat(exp3)
    g.strength = strength(not g.verdict.startswith("cannot decide"), caveats, failed)
    g.evidence = "; ".join(f"{s} {o}" for s, o in outcomes.items())
    return g


def _attention_verdict(outcomes, reads, gain, limit, raw, multiple, comparisons) -> tuple[str, str]:
    """Exp 3's decision: the statistics' verdicts, unless the SAMSum model fails the reading precondition;
    with the raw-text model's ablation as the contrast (it reads its source when reading pays)."""
    decided = {s: o for s, o in outcomes.items() if o in ("as hypothesised", "opposite to the hypothesis")}
    measured = "; ".join(f"{s} {o}" for s, o in outcomes.items())
    raw_part = ""
    if raw and gain is not None:
        diff = sum(raw) / len(raw) - gain
        outcome = judge(diff, seed_spread(raw), multiple)
        comparisons.append(
            compare_line("raw-text gain - SAMSum gain", diff, seed_spread(raw), multiple, outcome)
        )
        if outcome == "above":
            raw_part = (
                f" The same architecture trained on raw text loses {sum(raw) / len(raw):+.3g} nats when its "
                f"first half is swapped for another's, against {gain:+.3g} for the SAMSum model without its "
                f"dialogue (beyond {multiple:g}× the raw-text seed spread): what it reads depends on what "
                "its training makes pay."
            )
    if reads is False:
        return (
            "cannot decide: the SAMSum model measured does not read its dialogue",
            "Cannot decide from attention: the SAMSum model whose cross-attention Exp 3 measured does not "
            f"read its dialogue (ablation gain {gain:+.3f} nats; the gate asks for {limit:g}), so its "
            f"attention is that of a model that has not learned the task. As measured: {measured}.{raw_part} "
            "Choose the architecture by the task, and check reading with an ablation, not attention maps.",
        )
    if all(o == "cannot decide: not stored" for o in outcomes.values()):
        verdict = "cannot decide: the stored exp3 result holds no corpus contrast (rerun notebook 05)"
    elif decided and all(o == "as hypothesised" for o in decided.values()):
        verdict = "holds"
    elif decided and all(o == "opposite to the hypothesis" for o in decided.values()):
        verdict = "fails"
    else:
        verdict = "cannot decide: " + (
            "no statistic beyond the noise" if not decided else "the statistics disagree"
        )
    if verdict.startswith("cannot decide: the stored exp3 result"):
        return verdict, "Cannot decide: the stored exp3 result holds no corpus contrast; rerun notebook 05."
    caveat = " (whether the SAMSum model reads its dialogue was not stored)" if reads is None else ""
    return (
        verdict,
        f"Cross-attention sharper on SAMSum than on raw text: {verdict}{caveat}. "
        f"As measured: {measured}.{raw_part}",
    )


# ---- 5. scaling ------------------------------------------------------------------------------------


def stored_alpha_interval(fit: dict) -> tuple[float | None, float | None]:
    """The exponent's stored 95% interval, else the one its standard error gives (older runs stored only
    that), else (None, None)."""
    lo, hi = fit.get("alpha_lo95"), fit.get("alpha_hi95")
    if lo is not None and hi is not None:
        return lo, hi
    if None in (fit.get("alpha"), fit.get("alpha_std"), fit.get("dof")):
        return None, None
    lo, hi = alpha_interval(fit)
    return (None, None) if math.isnan(lo) else (lo, hi)


def scaling_facts(exp4: dict | None) -> dict:
    """Exp 4's numbers that the guideline compares, read by name: the fit's exponent and interval, the
    sizes smallest first, the seed noise (mean std of the best validation loss over sizes), the loss drop
    from the smallest to the largest size, its summary tokens per parameter, and the distinct shares."""
    fit = pick(exp4, "fit") or {}
    sizes = [s for s in pick(exp4, "sizes") or [] if s.get("best_val_loss") is not None]
    sizes = sorted(sizes, key=lambda s: s.get("params_non_embedding") or 0)
    stds = [s["best_val_loss_std"] for s in sizes if s.get("best_val_loss_std") is not None]
    small, large = (sizes[0], sizes[-1]) if len(sizes) > 1 else (None, None)
    lo, hi = stored_alpha_interval(fit)
    return {
        "fit": fit,
        "alpha": fit.get("alpha"),
        "lo": lo,
        "hi": hi,
        "sizes": sizes,
        "noise": sum(stds) / len(stds) if stds else None,
        "small": small,
        "large": large,
        "drop": small["best_val_loss"] - large["best_val_loss"] if small else None,
        "per_param": _ratio((large or {}).get("supervised_tokens"), (large or {}).get("params_total")),
        "distinct": [s["distinct_share"] for s in sizes if s.get("distinct_share") is not None],
    }


def alpha_verdict(lo: float | None, hi: float | None) -> str:
    """Exp 4's one decision: scaling is measured only when alpha's whole 95% interval lies above 0."""
    if lo is None or hi is None:
        return "cannot decide: no interval for alpha is stored"
    if lo > 0:
        return "scaling measured"
    return "loss grows with size" if hi < 0 else "cannot decide: the 95% interval of alpha includes 0"


def scaling_guideline(exp4: dict | None, multiple: float = NOISE_MULTIPLE) -> Guideline:
    """Exp 4: does a bigger encoder-decoder do better on SAMSum at a fixed token budget, and how fast?

    Measured: the power law's exponent with its 95% interval (scaling is measured only when the interval
    lies above 0) and the loss drop from the smallest to the largest size against the seed noise.
    Reference: Kaplan's exponent. What limits it: tokens per parameter against Chinchilla's 20, the number
    of sizes, and whether the summaries are distinct enough for ROUGE to rank the sizes.
    """
    title = "Scaling: a bigger encoder-decoder on SAMSum at a fixed token budget (Exp 4)"
    if exp4 is None:
        return absent(title, "exp4")
    f = scaling_facts(exp4)
    noise, distinct = f["noise"], f["distinct"]
    g = Guideline(title, runs=runs_of(exp4=exp4), verdict=alpha_verdict(f["lo"], f["hi"]))
    g.numbers = [
        Number("measured", "exponent alpha (loss against non-embedding parameters)", f["alpha"], "exp4"),
        Number("measured", "its 95% interval: from", f["lo"], "exp4"),
        Number("measured", "to", f["hi"], "exp4"),
        Number("reference", "Kaplan et al. 2020: alpha_N", KAPLAN_ALPHA_N),
        *(
            Number(
                "measured",
                f"best val loss, {s.get('name')} ({s.get('params_non_embedding', 0):,.0f} non-emb.)",
                s["best_val_loss"],
                "exp4",
            )
            for s in f["sizes"]
        ),
        Number("noise", "seed noise: mean std of the best val loss over sizes", noise, "exp4"),
        Number(
            "threshold", "a loss drop decides beyond", None if noise is None else multiple * noise, "exp4"
        ),
        Number("measured", "summary tokens per parameter, largest size", f["per_param"], "exp4", "{:.3f}"),
        Number("reference", "Chinchilla: tokens per parameter", CHINCHILLA_TOKENS_PER_PARAM, fmt="{:g}"),
        Number(
            "measured",
            "largest share of distinct summaries, any size",
            max(distinct, default=None),
            "exp4",
            "{:.1%}",
        ),
        Number("threshold", "ROUGE ranks models from a distinct share of", DISTINCT_FLOOR, fmt="{:.0%}"),
    ]
    if f["lo"] is not None:
        g.comparisons.append(f"alpha's 95% interval {f['lo']:.3f} to {f['hi']:.3f} against 0: {g.verdict}")
    if f["drop"] is not None:
        what = f"loss drop {f['small'].get('name')} -> {f['large'].get('name')}"
        g.comparisons.append(
            compare_line(what, f["drop"], noise, multiple, judge(f["drop"], noise, multiple))
        )
    g.sentence, caveats = _scaling_sentence(g.verdict, f)
    failed, flat = flat_caveat(exp4)
    g.strength = strength(g.verdict in ("scaling measured", "loss grows with size"), caveats + flat, failed)
    if f["alpha"] is not None and f["lo"] is not None:
        g.evidence = f"alpha {f['alpha']:.3f}, 95% interval {f['lo']:.3f} to {f['hi']:.3f}"
    return g


def _scaling_sentence(verdict: str, f: dict) -> tuple[str, list[str]]:
    """Guideline 5's sentence, and the caveats that limit it."""
    alpha, lo, hi, small, large, drop, noise = (
        f[k] for k in ("alpha", "lo", "hi", "small", "large", "drop", "noise")
    )
    caveats, parts = [], []
    bound = f["fit"].get("constrained") is False
    if bound:
        caveats.append(f"alpha is a lower bound (E fixed at 0, {f['fit'].get('n_sizes', '?')} sizes)")
    if verdict == "scaling measured":
        parts.append(
            f"A bigger encoder-decoder lowers the SAMSum loss, slowly: alpha = {alpha:.3f} (95% interval "
            f"{lo:.3f} to {hi:.3f}, above 0), {alpha / KAPLAN_ALPHA_N:.2f}× Kaplan's {KAPLAN_ALPHA_N}"
            + (", and a lower bound: with so few sizes the floor E is fixed at 0." if bound else ".")
        )
    elif alpha is not None and lo is not None:
        parts.append(
            f"Cannot decide how the loss scales: alpha = {alpha:.3f}, 95% interval {lo:.3f} to {hi:.3f}."
        )
    else:
        parts.append("Cannot decide how the loss scales: no exponent with an interval is stored.")
    if drop is not None:
        times = (large.get("params_non_embedding") or 0) / max(small.get("params_non_embedding") or 1, 1)
        against = (
            f", {drop / noise:.0f}× the seed noise ({noise:.3f})" if noise else " (no seed noise stored)"
        )
        parts.append(
            f"From {small.get('name')} to {large.get('name')} ({times:.0f}× the non-embedding parameters) "
            f"the validation loss falls {drop:.3f} nats{against}."
        )
    per_param = f["per_param"]
    if per_param is not None and per_param < CHINCHILLA_TOKENS_PER_PARAM:
        caveats.append(f"{per_param:.2g} summary tokens per parameter at the largest size")
        parts.append(
            f"Every size saw the same summary tokens, {per_param:.2g} per parameter at the largest against "
            f"Chinchilla's {CHINCHILLA_TOKENS_PER_PARAM}: the larger models are undertrained, which flattens "
            "the measured exponent; at a fixed token budget a bigger model buys little."
        )
    if f["distinct"] and max(f["distinct"]) < DISTINCT_FLOOR:
        parts.append(
            f"ROUGE cannot rank the sizes: at most {max(f['distinct']):.0%} of any size's summaries are "
            f"distinct (ROUGE ranks from {DISTINCT_FLOOR:.0%})."
        )
    return " ".join(parts), caveats


# ---- 6. transfer -----------------------------------------------------------------------------------


def transfer_rows(exp5: dict | None) -> list[dict]:
    """Per fraction of SAMSum with both a scratch and a transfer loss: the pretraining gain (scratch minus
    transfer best validation loss), the same against the equal-compute scratch control (None where it was
    not trained), and the number of seeds behind the gain."""
    loss = {v: by_float_key(d) for v, d in (pick(exp5, "val_loss") or {}).items()}
    summary = by_float_key(pick(exp5, "summary", "fractions"))
    rows = []
    for f in sorted(set(loss.get("scratch", {})) & set(loss.get("transfer", {}))):
        scratch, transfer = loss["scratch"][f], loss["transfer"][f]
        if scratch is None or transfer is None:
            continue
        eqc = loss.get("scratch_equal_compute", {}).get(f)
        rows.append(
            {
                "f": f,
                "scratch": scratch,
                "transfer": transfer,
                "equal_compute": eqc,
                "gain": scratch - transfer,
                "vs_equal_compute": None if eqc is None else eqc - transfer,
                "seeds": len((summary.get(f) or {}).get("gain_per_seed") or {}) or 1,
                "embedding_share": (summary.get(f) or {}).get("embedding_share_of_gain"),
            }
        )
    return rows


def _transfer_fraction(g: Guideline, r: dict, distinct: dict, noise: float | None, multiple: float) -> None:
    """One fraction's inputs (scratch, transfer, the equal-compute control, distinct shares) and its two
    comparisons against the noise, added to ``g``."""
    f = f"{r['f']:.0%} of SAMSum"
    g.numbers += [
        Number("measured", f"{f}: best val loss, scratch", r["scratch"], "exp5"),
        Number(
            "measured",
            f"{f}: best val loss, transfer ({r['seeds']} seed{'s' * (r['seeds'] > 1)})",
            r["transfer"],
            "exp5",
        ),
        Number("control", f"{f}: best val loss, scratch at equal compute", r["equal_compute"], "exp5"),
        *(
            Number(
                "measured", f"{f}: distinct summaries, {v}", distinct.get(v, {}).get(r["f"]), "exp5", "{:.1%}"
            )
            for v in ("scratch", "transfer")
        ),
    ]
    g.comparisons.append(
        compare_line(
            f"{f}: scratch - transfer", r["gain"], noise, multiple, judge(r["gain"], noise, multiple)
        )
    )
    if r["vs_equal_compute"] is not None:
        d = r["vs_equal_compute"]
        g.comparisons.append(
            compare_line(
                f"{f}: equal-compute scratch - transfer", d, noise, multiple, judge(d, noise, multiple)
            )
        )


def transfer_guideline(exp5: dict | None, multiple: float = NOISE_MULTIPLE) -> Guideline:
    """Exp 5: does decoder-only pretraining on raw text, copied into an encoder-decoder, help it on SAMSum?

    Measured, per fraction of SAMSum: scratch minus transfer best validation loss; control: the scratch
    model trained for the compute pretraining cost (is pretraining better than more SAMSum?); noise: the
    largest seed-to-seed range of any cell. ROUGE is read only where the summaries are distinct enough.
    """
    title = "Transfer: decoder-only pretraining copied into an encoder-decoder (Exp 5)"
    if exp5 is None:
        return absent(title, "exp5")
    noise = pick(exp5, "summary", "noise")
    noise = pick(exp5, "headline", "seed_noise") if noise is None else noise
    distinct = {v: by_float_key(d) for v, d in (pick(exp5, "distinct_share") or {}).items()}
    rows = transfer_rows(exp5)
    g = Guideline(title, runs=runs_of(exp5=exp5))
    for r in rows:
        _transfer_fraction(g, r, distinct, noise, multiple)
    g.numbers += [
        Number("noise", "seed noise: largest seed-to-seed range of any cell", noise, "exp5"),
        Number(
            "threshold", "a difference decides beyond ±", None if noise is None else multiple * noise, "exp5"
        ),
        Number("threshold", "ROUGE ranks models from a distinct share of", DISTINCT_FLOOR, fmt="{:.0%}"),
    ]
    g.verdict, g.sentence, caveats = _transfer_verdict(rows, noise, multiple, distinct, exp5)
    failed, flat = flat_caveat(exp5)
    g.strength = strength(not g.verdict.startswith("cannot decide"), caveats + flat, failed)
    if rows:
        g.evidence = ", ".join(f"{r['f']:.0%}: gain {r['gain']:+.2f} nats" for r in rows)
        g.evidence += f" (threshold ±{multiple * noise:.3f})" if noise is not None else " (no noise estimate)"
    return g


def _transfer_verdict(rows, noise, multiple, distinct, exp5) -> tuple[str, str, list[str]]:
    """Exp 5's decision over the fractions, its sentence and its caveats."""
    if not rows:
        return (
            "cannot decide: no scratch and transfer losses stored",
            "Cannot decide: Exp 5 stored no scratch and transfer losses; rerun notebook 07.",
            [],
        )
    outcomes = [judge(r["gain"], noise, multiple) for r in rows]
    if noise is None:
        verdict = "cannot decide: one seed, no noise estimate"
    elif set(outcomes) in ({"above"}, {"below"}):
        verdict = "pretraining helps" if outcomes[0] == "above" else "pretraining hurts"
    else:
        verdict = "cannot decide: " + (
            "within the noise" if set(outcomes) == {"within"} else "the fractions disagree"
        )
    gains = ", ".join(f"{r['gain']:.2f} nats at {r['f']:.0%} of the data" for r in rows)
    if verdict == "pretraining helps":
        head = (
            "Warm-start the encoder-decoder from a decoder-only model pretrained on raw text: it lowers the "
            f"SAMSum validation loss by {gains}, beyond {multiple:g}× the seed noise "
            f"({multiple:g} × {noise:.3f})."
        )
    else:
        head = f"Pretraining copied into the encoder-decoder: {verdict} (scratch - transfer: {gains})."
    parts, caveats = [head], []
    for r in rows:
        if r["vs_equal_compute"] is None:
            parts.append(f"At {r['f']:.0%} the equal-compute control was not trained at this budget.")
            caveats.append(f"no equal-compute control at {r['f']:.0%}")
        else:
            word = {"above": "beats", "below": "loses to"}.get(
                judge(r["vs_equal_compute"], noise, multiple), "is level with"
            )
            diff = r["vs_equal_compute"]
            parts.append(f"At {r['f']:.0%} it {word} spending the same compute on SAMSum ({diff:+.2f} nats).")
        if r["seeds"] < 2:
            caveats.append(f"one seed at {r['f']:.0%}")
        if r["embedding_share"] is not None:
            parts.append(f"At {r['f']:.0%} the embedding alone gives {r['embedding_share']:.0%} of the gain.")
    generic = [
        v
        for v in ("scratch", "transfer")
        if any(x is not None and x < DISTINCT_FLOOR for x in distinct.get(v, {}).values())
    ]
    if generic:
        parts.append(
            f"ROUGE cannot confirm it: the {' and '.join(generic)} model{'s' * (len(generic) > 1)} repeat"
            f"{'s' * (len(generic) == 1)} most summaries (distinct share below {DISTINCT_FLOOR:.0%}), so "
            "ROUGE scores generic sentences there."
        )
    if pick(exp5, "source_use") is None:
        caveats.append("no reading gate for its models")
        parts.append(
            "Whether the fine-tuned models read their dialogue was not measured: a lower loss can also come "
            "from a better language model of summaries."
        )
    return verdict, " ".join(parts), caveats


# ---- showing them ----------------------------------------------------------------------------------


def inputs_frame(g: Guideline) -> pd.DataFrame:
    """A guideline's inputs as a table, in the order a reader checks them: role, quantity, value, run."""
    rows = [{"role": n.role, "quantity": n.name, "value": n.shown(), "run": n.run} for n in g.numbers]
    return pd.DataFrame(rows, columns=["role", "quantity", "value", "run"])


def show(g: Guideline) -> str:
    """The verdict cell's text: the inputs first, the runs they come from, the comparisons made with them,
    then the verdict, its strength and the sentence."""
    inputs = inputs_frame(g).to_string(index=False) if g.numbers else "  none stored"
    lines = [g.title, "", "Inputs:", inputs, "", "Runs:"]
    lines += [f"  {name}: {line}" for name, line in g.runs.items()] or ["  none stored"]
    lines += ["", "Comparisons:", *(f"  {c}" for c in g.comparisons or ["none possible"]), ""]
    lines += [f"Verdict: {g.verdict} (evidence: {g.strength})", g.sentence]
    return "\n".join(lines)


def all_guidelines(stored: dict[str, dict | None], multiple: float = NOISE_MULTIPLE) -> list[Guideline]:
    """Notebook 08's six guidelines from one budget's stored results (``load_stored``), at one noise
    multiple: the exercises rebuild them all at other thresholds and budgets. The SAMSum gate compares with
    fixed thresholds, not with a noise, so it takes no multiple."""
    return [
        raw_text_guideline(stored.get("exp1"), stored.get("exp2"), multiple),
        cost_guideline(stored.get("exp1"), stored.get("bench"), multiple),
        samsum_guideline(stored.get("samsum_baseline"), stored.get("exp3")),
        attention_guideline(stored.get("exp3"), stored.get("samsum_baseline"), multiple),
        scaling_guideline(stored.get("exp4"), multiple),
        transfer_guideline(stored.get("exp5"), multiple),
    ]


def summary_frame(guidelines: Sequence[Guideline]) -> pd.DataFrame:
    """The closing table: one row per guideline with its verdict, the evidence behind it and its strength."""
    rows = [
        {"guideline": g.title, "verdict": g.verdict, "evidence": g.evidence, "strength": g.strength}
        for g in guidelines
    ]
    return pd.DataFrame(rows, columns=["guideline", "verdict", "evidence", "strength"])
