"""The results registry: provenance on every stored number, tables built from the files."""

import json

import pytest
import torch

from course import results
from course.results import provenance, save_results, stored_results_table, update_readme


@pytest.fixture()
def registry(tmp_path, monkeypatch):
    monkeypatch.setenv("REFTX_RESULTS_DIR", str(tmp_path))
    return tmp_path


def test_saved_results_carry_provenance(registry):
    prov = provenance("cpu", torch.device("cpu"), {"lr": 1e-3}, wall_time_s=12.34)
    path = save_results("exp9", "cpu", {"rouge1": {"1.0": 31.5}}, prov)
    stored = json.loads(path.read_text())
    assert path == registry / "exp9" / "cpu.json"
    assert {"budget", "device", "torch", "commit", "date", "wall_time_s", "config"} <= set(
        stored["provenance"]
    )
    assert stored["provenance"]["budget"] == "cpu" and stored["provenance"]["wall_time_s"] == 12.3
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


def test_verdicts_beside_supports_only_the_same_decision_as_the_reference_run(tmp_path, monkeypatch):
    from course import results
    from course.results import verdicts_beside

    monkeypatch.setattr(results, "results_dir", lambda: tmp_path)
    mine = {"a": "holds (one seed: no noise estimate)", "b": "fails", "c": "cannot decide: seeds disagree"}
    assert set(verdicts_beside("exp9", "cpu", mine)["supported here"]) == {"unknown: no stored full verdict"}
    (tmp_path / "exp9").mkdir()
    stored = {"metrics": {"verdicts": {"a": "holds", "b": "holds", "c": "fails"}}, "provenance": {}}
    (tmp_path / "exp9" / "full.json").write_text(json.dumps(stored))
    table = verdicts_beside("exp9", "cpu", mine)
    assert list(table["supported here"]) == [
        "yes: the same decision",
        "no: the full run decides otherwise",
        "no: this run cannot decide it",
    ]
    reference = verdicts_beside("exp9", "full", mine)
    assert set(reference["supported here"]) == {"this is the reference run"}
    assert list(reference["full run"]) == list(mine.values())  # never the older run still on disk
