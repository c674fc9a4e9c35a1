"""The notebooks are lessons and regression tests: check their structure and committed outputs.

nbval executes them (see the README's test command); these checks cover what
execution cannot: one parameters cell each, no `;`-terminated cells, and committed
outputs that come from a real `cpu`, `full` or `gpu` run, whose provenance is the first output.
"""

import json
import re
from pathlib import Path

import pytest

from course.results import README_BEGIN, README_END, readme_table
from course.runner import notebooks

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = notebooks()


def test_course_has_all_notebooks():
    names = [p.name[:2] for p in NOTEBOOKS]
    assert names == ["00", "01", "02", "03", "04", "05", "06", "07", "08"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exactly_one_parameters_cell_with_the_course_parameters(path):
    nb = json.loads(path.read_text())
    params = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, f"{path.name}: {len(params)} cells tagged 'parameters'"
    source = "".join(params[0]["source"])
    for name in ("BUDGET", "SEED", "DEVICE"):
        assert re.search(rf"^{name}\s*=", source, re.M), f"{path.name}: parameters cell lacks {name}"
    assert 'os.environ.get("REFTX_BUDGET", "cpu")' in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_ends_with_semicolon_and_widgets_are_ignored(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]).rstrip()
        assert not source.endswith(";"), f"{path.name}: a cell ends with ';'"
        if "AttentionExplorer(" in source or "widgets." in source:
            assert "# NBVAL_IGNORE_OUTPUT" in source, f"{path.name}: widget cell without NBVAL_IGNORE_OUTPUT"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_come_from_a_real_run(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), f"{path.name}: not every cell was executed"
    first = next(
        (
            o
            for c in code
            for o in c.get("outputs", [])
            if o.get("output_type") == "stream" and o.get("name") == "stdout"
        ),
        None,
    )
    assert first is not None, f"{path.name}: no printed output"
    text = "".join(first["text"])
    # Runs before the budget/size split (issue 28) printed "preset=" for the budget.
    provenance = r"Run: (?:budget|preset)=(\w+) \| seed=\d+ \| device=(.+?) \| torch (\S+) \| commit (\S+)"
    match = re.search(provenance + r" \| (.+ UTC)", text)
    assert match, f"{path.name}: the first output is not the provenance line: {text[:200]!r}"
    assert match.group(1) in ("cpu", "full", "gpu"), (
        f"{path.name}: committed outputs come from budget {match.group(1)!r}"
    )
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: committed notebook holds an error output"


def test_readme_results_table_is_generated_from_results():
    text = (ROOT / "README.md").read_text()
    table = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert table == readme_table(), (
        "README results table is stale: run `python -m course results --update-readme`"
    )
