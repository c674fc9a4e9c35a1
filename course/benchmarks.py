"""What the benchmarks in ``tools/`` stored, read back for the course: the learning-parity runs
(``python -m tools --learning --save NAME`` writes ``results/bench/learning-NAME.json``), merged, judged
and plotted. Notebook 00 reads them here; it never runs the benchmark itself.
"""

from __future__ import annotations

import json

from scipy import stats


def gap_verdict(row: dict, tolerance: float, warmup_steps: int) -> dict:
    """Is ours within ``tolerance`` nats of the peer after warm-up, and can this run tell?

    Both sides of one seed train on the same batches, so the difference is taken per seed
    (paired) and its noise is the standard error of the mean over seeds, at each evaluation
    after warm-up. ``behind`` if at some step the mean gap exceeds ``tolerance`` by more than
    its 95% margin, Student's t quantile for n - 1 degrees of freedom times the standard
    error (12.7 standard errors for two seeds, 4.3 for three: few seeds decide little; with
    one seed there is no noise estimate, and any excess counts); ``within`` if the mean gap
    is at most ``tolerance`` at every step; otherwise ``undecided``. The step reported is the
    one that decides: the largest clear excess, else the largest gap.
    """
    seeds = list(row["runs"]["ours"])
    found = []  # (mean gap, standard error or None, step) per evaluation after warm-up
    for i, step in enumerate(row["steps"]):
        if step <= warmup_steps:
            continue
        diffs = [row["runs"]["ours"][s]["curve"][i][1] - row["runs"]["peer"][s]["curve"][i][1] for s in seeds]
        mean = sum(diffs) / len(diffs)
        se = (
            (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
            if len(diffs) > 1
            else None
        )
        found.append((mean, se, step))
    margin = float(stats.t.ppf(0.975, len(seeds) - 1)) if len(seeds) > 1 else 0.0  # standard errors
    clear = [f for f in found if f[0] > tolerance and (f[1] is None or f[0] - tolerance > margin * f[1])]
    if clear:
        status, (gap, se, step) = "behind", max(clear)
    else:
        gap, se, step = max(found)
        status = "within" if gap <= tolerance else "undecided"
    noise = "" if se is None else f" ± {se:.3f} (standard error over {len(seeds)} seeds)"
    text = {
        "within": f"within the {tolerance} target at every step",
        "undecided": f"above the {tolerance} target by less than the 95% margin of {len(seeds)} seeds "
        f"({margin:.1f} standard errors): this run cannot decide",
        "behind": f"NOT within the {tolerance} target",
    }[status]
    where = "largest clear gap" if status == "behind" else "largest gap"
    return {
        "status": status,
        "gap": gap,
        "se": se,
        "step": step,
        "text": f"{where} ours - peer after warm-up {gap:+.3f} nats{noise} at step {step}: {text}",
    }


def pooled_gap(rows: list[dict]) -> dict:
    """Ours - peer at the last step over every (corpus, seed) pair of ``rows``, with a 95% t interval.

    One row's two or three seeds decide little; pooled over corpora the interval narrows, at the
    price of averaging corpora whose gaps may differ.
    """
    diffs = [
        r["runs"]["ours"][s]["curve"][-1][1] - r["runs"]["peer"][s]["curve"][-1][1]
        for r in rows
        for s in r["runs"]["ours"]
    ]
    n = len(diffs)
    mean = sum(diffs) / n if n else float("nan")
    if n < 2:
        return {"n": n, "corpora": len(rows), "mean": mean, "low": float("nan"), "high": float("nan")}
    se = (sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) ** 0.5
    margin = float(stats.t.ppf(0.975, n - 1)) * se
    return {"n": n, "corpora": len(rows), "mean": mean, "low": mean - margin, "high": mean + margin}


def load_stored(name: str) -> list[dict]:
    """Every stored learning run named ``name``: ``learning-<name>.json`` and ``learning-<name>-<part>.json``.

    A run that had to stop early keeps its rows; a second run can measure the rest
    (``--archs``/``--corpora``) and ``merge_stored`` shows them together.
    """
    from course.results import results_dir

    folder = results_dir() / "bench"
    paths = sorted(folder.glob(f"learning-{name}.json")) + sorted(folder.glob(f"learning-{name}-*.json"))
    return [json.loads(p.read_text()) for p in paths]


def merge_stored(stored: list[dict]) -> dict:
    """The rows of several stored learning runs as one ``metrics`` dict, each row with its run's provenance.

    The runs must share every setting except their seeds (each row keeps its own), and
    measure different (architecture, corpus) rows.
    """
    if not stored:
        raise ValueError("no stored learning run to merge: run python -m tools --learning --save NAME")
    per_run = ("seeds", "variant_seeds")
    first = stored[0]["metrics"]["setup"]
    rows, seen = [], set()
    for run in stored:
        setup = run["metrics"]["setup"]
        differ = sorted(
            k for k in first.keys() | setup.keys() if k not in per_run and first.get(k) != setup.get(k)
        )
        if differ:
            raise ValueError(f"learning runs with different settings cannot be shown as one: {differ}")
        for row in run["metrics"]["rows"]:
            if (row["arch"], row["corpus"]) in seen:
                raise ValueError(f"two stored runs measured {row['arch']} on {row['corpus']}; keep one")
            seen.add((row["arch"], row["corpus"]))
            rows.append({**row, "provenance": run["provenance"]})
    planned = max(run["metrics"].get("n_rows_planned", len(run["metrics"]["rows"])) for run in stored)
    return {"rows": rows, "setup": first, "n_rows": len(rows), "n_rows_planned": max(planned, len(rows))}


def verdict_lines(metrics: dict) -> list[str]:
    """One computed verdict per stored row: ours against the peer after warm-up, against the seed noise,
    and how far the variants (e.g. the 2017 embedding) and the unigram control lie at the last step."""
    setup = metrics["setup"]
    lines = []
    for r in metrics["rows"]:
        noise = (
            ""
            if r["seed_spread"] is None
            else (
                f" (seeds {list(r['runs']['ours'])}: ours vary by up to {r['seed_spread']['ours']:.3f}, "
                f"the peer by {r['seed_spread']['peer']:.3f})"
            )
        )
        gap = gap_verdict(r, setup["tolerance"], setup["warmup_steps"])["text"]
        line = (
            f"{r['arch']} on {r['corpus']}: {gap}{noise}; "
            f"at step {r['steps'][-1]} ours {r['ours'][-1]:.3f}, peer {r['peer'][-1]:.3f}, "
            f"unigram {r['unigram_loss']:.3f}"
        )
        for name, curve in r["variants"].items():
            line += (
                f"; {name} {curve[-1]:.3f} ({curve[-1] - r['ours'][-1]:+.3f} against ours, "
                f"{len(r['runs'][name])} seed(s))"
            )
        lines.append(line)
    for arch in dict.fromkeys(r["arch"] for r in metrics["rows"]):
        pooled = pooled_gap([r for r in metrics["rows"] if r["arch"] == arch])
        if pooled["n"] > 1:
            interval = f"[{pooled['low']:+.3f}, {pooled['high']:+.3f}]"
            lines.append(
                f"{arch}, pooled over {pooled['n']} paired runs ({pooled['corpora']} corpora x seeds): "
                f"ours - peer at the last step {pooled['mean']:+.3f} nats, 95% interval {interval}"
            )
    planned = metrics.get("n_rows_planned", len(metrics["rows"]))
    if len(metrics["rows"]) < planned:
        lines.append(
            f"only {len(metrics['rows'])} of the {planned} planned rows were run: the others are not measured"
        )
    return lines


def plot_curves(metrics: dict):
    """Validation loss against step for every stored row (columns: corpora, rows: architectures).

    Ours and the peer are drawn with the band their seeds span, each variant as a dashed
    line, and the unigram control as a grey line: the plateau a context-free model sits on.
    """
    import matplotlib.pyplot as plt

    rows = metrics["rows"]
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    fig, axes = plt.subplots(
        len(archs), len(corpora), figsize=(4.6 * len(corpora), 3.4 * len(archs)), squeeze=False, sharex=True
    )
    for r in rows:
        ax = axes[archs.index(r["arch"])][corpora.index(r["corpus"])]
        for key, label, color in (("ours", r["model"], "C0"), ("peer", r["peer_model"], "C1")):
            ax.plot(r["steps"], r[key], color=color, label=label)
            per_seed = [[v for _, v in run["curve"]] for run in r["runs"][key].values()]
            ax.fill_between(
                r["steps"],
                [min(v) for v in zip(*per_seed)],
                [max(v) for v in zip(*per_seed)],
                color=color,
                alpha=0.25,
                linewidth=0,
            )
        for i, (name, curve) in enumerate(r["variants"].items()):
            ax.plot(r["steps"], curve, color=f"C{i + 2}", linestyle="--", label=f"ours, {name}")
        ax.axhline(r["unigram_loss"], color="grey", linewidth=1, label="unigram model")
        ax.set_title(f"{r['arch']} on {r['corpus']}", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation loss (nats)")
    for row in axes:
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_gaps(metrics: dict, tolerance: float = 0.02):
    """Ours - peer against step, one panel per stored row: each seed's paired gap and their mean,
    with the target band. Where both sides start from one draw (``peer_init``), this is what
    separates the models themselves."""
    import matplotlib.pyplot as plt

    rows = metrics["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(4.6 * len(rows), 3.4), squeeze=False, sharey=True)
    for ax, r in zip(axes[0], rows):
        for seed in r["runs"]["ours"]:
            gap = [
                o[1] - p[1]
                for o, p in zip(r["runs"]["ours"][seed]["curve"], r["runs"]["peer"][seed]["curve"])
            ]
            ax.plot(r["steps"], gap, color="C0", alpha=0.35, linewidth=1)
        ax.plot(
            r["steps"], r["diff"], color="C0", linewidth=2, label=f"mean of seeds {list(r['runs']['ours'])}"
        )
        ax.axhspan(-tolerance, tolerance, color="C2", alpha=0.15, label=f"target ±{tolerance}")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_title(f"{r['arch']} on {r['corpus']}", fontsize=10)
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("validation loss, ours - peer (nats)")
    fig.suptitle(f"{rows[0]['model']} - {rows[0]['peer_model']}, seed by seed", fontsize=11)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
