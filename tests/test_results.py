"""The results registry: provenance on every stored number, tables built from the files."""

import json

import pytest
import torch

from reftx_lib.course import results
from reftx_lib.course.results import provenance, save_results, stored_results_table, update_readme


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("REFTX_RESULTS_DIR", str(tmp_path))
    return tmp_path


def test_saved_results_carry_provenance(registry):
    prov = provenance("cpu", torch.device("cpu"), {"lr": 1e-3}, wall_time_s=12.34)
    path = save_results("exp9", "cpu", {"rouge1": {"1.0": 31.5}}, prov)
    stored = json.loads(path.read_text())
    assert path == registry / "exp9" / "cpu.json"
    assert {"preset", "device", "torch", "commit", "date", "wall_time_s", "config"} <= set(
        stored["provenance"]
    )
    assert stored["provenance"]["preset"] == "cpu" and stored["provenance"]["wall_time_s"] == 12.3
    assert stored["metrics"]["rouge1"]["1.0"] == 31.5
    assert not list(registry.glob("exp9/*.tmp"))


def test_saved_results_hold_no_machine_path(registry):
    inside = str(results.repo_root() / "checkpoints" / "cpu" / "run")
    prov = provenance("cpu", torch.device("cpu"), {"checkpoint_dir": inside, "other": "/elsewhere"}, 1.0)
    stored = json.loads(save_results("exp9", "cpu", {"paths": [inside]}, prov).read_text())
    assert stored["provenance"]["config"] == {"checkpoint_dir": "checkpoints/cpu/run", "other": "/elsewhere"}
    assert stored["metrics"]["paths"] == ["checkpoints/cpu/run"]


def test_stored_table_reads_nested_keys_with_dots_and_marks_missing_runs(registry):
    save_results(
        "exp9", "cpu", {"rouge1": {"scratch": {"1.0": 31.5}}}, provenance("cpu", torch.device("cpu"), {}, 1.0)
    )
    table = stored_results_table("exp9", ["rouge1.scratch.1.0", "missing.key"])
    cpu_row, full_row, gpu_row = table.splitlines()[2:]
    assert cpu_row.startswith("| cpu | 31.50 | — |")
    assert full_row.startswith("| full | — | — | not run")
    assert gpu_row.startswith("| gpu | — | — | not run")


def test_readme_table_is_regenerated_between_markers(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "HEADLINES", {"exp9": [("R-1", "rouge1")]})
    save_results("exp9", "cpu", {"rouge1": 30.0}, provenance("cpu", torch.device("cpu"), {}, 1.0))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{results.README_BEGIN}\nold\n{results.README_END}\noutro\n")
    assert update_readme(readme)
    text = readme.read_text()
    assert "| exp9 | cpu | R-1 30.00 |" in text and "old" not in text and text.endswith("outro\n")
    assert not update_readme(readme)  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_readme(readme)
