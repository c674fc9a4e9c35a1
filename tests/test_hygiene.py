"""What a committed file may hold: no path of the machine that produced it, no frozen progress bar."""

import json
import re
import subprocess
from pathlib import Path

from course.runner import for_commit
from reftx_lib.paths import repo_root

# An absolute path under a folder that names a machine's users or workspaces. Scripts may name
# scratch folders such as /tmp/out, which exist on every machine, so /tmp is not among them.
MACHINE_PATH = re.compile(r"""(?:^|[\s"'(=:\[,])(/(?:home|root|Users|work|check|mnt|srv|private)/\S*)""")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=repo_root(), capture_output=True, text=True, check=True
    ).stdout.split()
    return [repo_root() / n for n in names if not n.endswith((".png", ".jpg", ".whl"))]


def test_no_committed_file_holds_a_machine_path():
    here = str(repo_root())
    found = []
    for path in tracked_text_files():
        if path == Path(__file__).resolve():
            continue  # this file holds the pattern's own examples
        text = path.read_text(errors="replace")
        found += [(path.name, here)] if here in text else []
        found += [(path.name, m.group(1)[:60]) for m in MACHINE_PATH.finditer(text)]
    assert not found, f"absolute machine paths in committed files: {found}"


def test_the_pattern_sees_machine_paths_and_lets_relative_ones_pass():
    assert MACHINE_PATH.search('"input_path": "/home/ana/reftx/notebooks/01.ipynb"')
    assert MACHINE_PATH.search("data folder: /work/shared/data")
    assert not MACHINE_PATH.search("data folder: ../shared/data, results/exp1/cpu.json, /tmp/out")


def _notebook(outputs: list[dict]) -> str:
    meta = {"papermill": {"input_path": "/work/main/notebooks/x.ipynb", "output_path": "/work/x.ipynb"}}
    cell = {"cell_type": "code", "source": "fit(...)", "metadata": {}, "outputs": outputs}
    return json.dumps({"cells": [cell], "metadata": meta, "nbformat": 4, "nbformat_minor": 5})


def test_for_commit_drops_papermill_paths_and_frozen_progress_bars_only():
    bar = {
        "output_type": "display_data",
        "metadata": {},
        "data": {
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2},
            "text/plain": "ReferenceTransformer:   0%|          | 0/500 [00:00<?, ?it/s]",
        },
    }
    explorer = {**bar, "data": {**bar["data"], "text/plain": "VBox(children=(Dropdown(...),))"}}
    printed = {"output_type": "stream", "name": "stdout", "text": "500 steps in 1106 s\n"}
    nb = json.loads(for_commit(_notebook([bar, explorer, printed])))
    assert nb["metadata"]["papermill"] == {}
    assert nb["cells"][0]["outputs"] == [explorer, printed]


def test_committed_notebooks_hold_no_progress_bar():
    for path in sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert for_commit(path.read_text()) == path.read_text(), f"{path.name}: run it through for_commit"
