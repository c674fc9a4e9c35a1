"""Do two executed courses print the same numbers? ``python -m tools.compare_runs BEFORE AFTER``.

A refactor that must not change what the course computes (a new layout, a faster step) is checked by
running the course twice at ``smoke`` (``python -m course run --budget smoke``, into ``runs/smoke/``),
once before and once after, and comparing every number the notebooks printed, cell by cell. Lines
that hold a clock reading (seconds, tokens/s, dates, commits, memory) differ between any two runs, so
they are counted apart and never called a difference in what was computed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

NUMBER = re.compile(r"(?<![A-Za-z_])-?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")
# Lines whose numbers are readings of the machine, not results of the computation.
CLOCK = re.compile(
    r"tokens/s|tok/s|seconds|\bs\b|\bsec|minute|\bmin\b|wall|elapsed|MiB|\bMB\b|GFLOP|matmul|peak|"
    r"commit|date|\d{4}-\d{2}-\d{2}|it/s|s/it|cell/s|ms\b|Run: |time",
    re.IGNORECASE,
)
ADDRESS = re.compile(r"0x[0-9a-f]+")  # an object's address in its repr
PROGRESS = re.compile(r"examples/s\]|it/s\]|s/it\]")  # a progress bar (the datasets cache decides which run)


def column_label(header: str, end: int) -> str:
    """The label of a right-aligned table column (pandas) that ends at character ``end`` of ``header``."""
    match = re.search(r"(\S+(?: \S+)*)\s*$", header[: end + 1])
    return match.group(1) if match else ""


def cell_lines(path: Path) -> list[list[str]]:
    """The text each code cell printed (streams and plain-text results), one list of lines per cell."""
    cells = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        text = []
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream" and out.get("name") == "stdout":
                text.append("".join(out["text"]))
            elif "data" in out and "text/plain" in out["data"]:
                text.append("".join(out["data"]["text/plain"]))
        lines = "\n".join(text).splitlines()
        cells.append([line for line in lines if line.strip() and not PROGRESS.search(line)])
    return cells


def compare(before: Path, after: Path) -> tuple[int, int, int, list[str]]:
    """(numbers that agree, numbers on clock lines, numbers that differ, the differing lines)."""
    same = clock = differ = 0
    report = []
    old_cells, new_cells = cell_lines(before), cell_lines(after)
    if len(old_cells) != len(new_cells):
        report.append(f"{after.name}: {len(old_cells)} code cells before, {len(new_cells)} after")
    for i, (old, new) in enumerate(zip(old_cells, new_cells)):
        header = ""
        for a, b in zip(old, new):
            a, b = ADDRESS.sub("0x", a), ADDRESS.sub("0x", b)
            na, nb = list(NUMBER.finditer(a)), list(NUMBER.finditer(b))
            if (not na and len(a.split()) > 1) or a.rstrip().endswith("\\"):
                header = a  # a table's header line: the labels of the columns below it
            if CLOCK.search(a):
                clock += len(na)
                continue
            for x, y in zip(na, nb):
                if CLOCK.search(column_label(header, x.end() - 1)):
                    clock += 1
                elif x.group() == y.group():
                    same += 1
                else:
                    differ += 1
                    report.append(f"{after.name} cell {i}:\n  - {a.strip()[:160]}\n  + {b.strip()[:160]}")
            if len(na) != len(nb):
                differ += abs(len(na) - len(nb))
                lines = f"\n  - {a.strip()[:160]}\n  + {b.strip()[:160]}"
                report.append(f"{after.name} cell {i}: numbers differ in count{lines}")
        if len(old) != len(new):
            report.append(f"{after.name} cell {i}: {len(old)} lines before, {len(new)} after")
    return same, clock, differ, report


def main(argv: list[str] | None = None) -> int:
    """Compare every notebook found in both folders; exit 1 if any computed number differs."""
    p = argparse.ArgumentParser(prog="python -m tools.compare_runs", description=__doc__.splitlines()[0])
    p.add_argument(
        "before", type=Path, help="folder of executed notebooks (e.g. runs/smoke of the old commit)"
    )
    p.add_argument("after", type=Path, help="folder of executed notebooks of the new commit")
    args = p.parse_args(argv)
    total = [0, 0, 0]
    for old in sorted(args.before.glob("*.ipynb")):
        new = args.after / old.name
        if not new.exists():
            print(f"{old.name}: missing in {args.after}")
            total[2] += 1
            continue
        same, clock, differ, report = compare(old, new)
        total = [total[0] + same, total[1] + clock, total[2] + differ]
        print(f"{old.name}: {same} numbers agree, {differ} differ, {clock} on clock lines (not compared)")
        print("\n".join(report))
    print(f"all: {total[0]} numbers agree, {total[2]} differ, {total[1]} on clock lines (not compared)")
    return 1 if total[2] else 0


if __name__ == "__main__":
    sys.exit(main())
