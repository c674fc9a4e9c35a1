"""The command line and the notebook runner: clear errors, non-zero exits, failures reported with their
cell."""

import subprocess
import sys

import nbformat
import pytest

from course.runner import report, run_course


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "course", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (("train", "--budget", "huge"), "invalid choice: 'huge'"),
        (("train", "--data", "wikipedia"), "invalid choice: 'wikipedia'"),
        (("train", "--epochs", "3"), "unrecognized arguments: --epochs"),
        (("fly",), "invalid choice: 'fly'"),
    ],
)
def test_bad_options_exit_2_with_a_message(args, message):
    proc = cli(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    proc = cli("generate", "--checkpoint", str(tmp_path / "none.pt"), "--text", "hello")
    assert proc.returncode == 1
    assert "no checkpoint at" in proc.stderr and "none.pt" in proc.stderr


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)


def test_runner_keeps_going_and_reports_the_failing_cell(tmp_path, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "00_ok.ipynb", "x = 1")
    _notebook(folder / "01_broken.ipynb", "y = 2", "raise RuntimeError('boom in cell one')")
    _notebook(folder / "02_ok.ipynb", "z = 3")
    results = run_course("smoke", folder=folder, out_dir=tmp_path / "runs")
    assert [r.error is None for r in results] == [True, False, True]  # it went on past the failure
    assert "cell In [2]" in results[1].error and "RuntimeError: boom in cell one" in results[1].error
    assert report(results) == 1
    assert "FAILED 01_broken.ipynb" in capsys.readouterr().out
    assert (tmp_path / "runs" / "02_ok.ipynb").is_file()
