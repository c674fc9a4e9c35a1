"""Run the course headlessly: every notebook in order, with papermill, at one budget.

The budget reaches the notebooks through the environment (``REFTX_BUDGET``), not
through an injected cell, so an executed notebook keeps exactly one
``parameters`` cell and can be committed as it is (``--update-notebooks``).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from reftx_lib.paths import repo_root


@dataclass
class NotebookResult:
    name: str
    seconds: float
    error: str | None = None


def notebooks(only: list[str] | None = None, folder: Path | None = None) -> list[Path]:
    """The course notebooks in order; ``only`` selects by number (``00``, ``03``) or name, exactly: a
    prefix such as ``0`` or ``''`` would select several notebooks."""
    paths = sorted((folder or repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        chosen = [p for p in paths if any(o in (p.name[:2], p.stem, p.name) for o in only)]
        unknown = [o for o in only if not any(o in (p.name[:2], p.stem, p.name) for p in paths)]
        if unknown:
            raise ValueError(f"no notebook matches {unknown}; available: {[p.name[:2] for p in paths]}")
        paths = chosen
    return paths


def _describe_failure(exc: Exception, output: Path) -> str:
    """Which cell failed and why, read from the executed notebook papermill saved."""
    import nbformat

    try:
        nb = nbformat.read(output, as_version=4)
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                    return (
                        f"cell In [{cell.execution_count}] ({first_line[:60]!r}): "
                        f"{out['ename']}: {out['evalue']}"
                    )
    except Exception:  # the notebook could not be read back: report papermill's own error
        pass
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def run_course(
    budget: str,
    only: list[str] | None = None,
    update_notebooks: bool = False,
    timeout_per_cell: int | None = None,
    folder: Path | None = None,
    out_dir: Path | None = None,
) -> list[NotebookResult]:
    """Execute the notebooks into ``runs/<budget>/``, going on past failures; returns one result each."""
    import papermill as pm

    out_dir = out_dir or repo_root() / "runs" / budget
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["REFTX_BUDGET"] = budget
    results = []
    paths = notebooks(only, folder)
    for i, path in enumerate(paths, 1):
        output = out_dir / path.name
        print(f"[{i}/{len(paths)}] {path.name} (budget {budget}) ...", flush=True)
        start = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(
                str(path),
                str(output),
                kernel_name="python3",
                cwd=str(path.parent),
                progress_bar=True,
                execution_timeout=timeout_per_cell,
            )
        except Exception as exc:  # keep going: report every failing notebook at the end
            error = _describe_failure(exc, output)
        seconds = time.perf_counter() - start
        results.append(NotebookResult(path.name, seconds, error))
        print(
            f"    {'FAILED' if error else 'ok'} in {seconds:.0f} s" + (f": {error}" if error else ""),
            flush=True,
        )
        if update_notebooks and error is None:
            path.write_text(for_commit(output.read_text()))
    return results


# A tqdm bar's text fallback, e.g. "ReferenceTransformer:   0%|          | 0/500 [00:00<?, ?it/s]".
_PROGRESS_BAR = re.compile(r"\d+%\|.*\| *\d+/\d+ \[")


def for_commit(text: str) -> str:
    """The executed notebook as it is committed: without papermill's input/output paths, which name
    this machine's folders, and without progress-bar widgets.

    A widget's state is not saved by a headless run, so a committed progress bar shows only its
    text fallback, frozen at 0% ("0%| 0/500"): it says nothing the cell's printed results do not.
    """
    nb = json.loads(text)
    for key in ("input_path", "output_path"):
        nb.get("metadata", {}).get("papermill", {}).pop(key, None)
    for cell in nb.get("cells", []):
        if "outputs" in cell:
            cell["outputs"] = [
                out
                for out in cell["outputs"]
                if not (
                    out.get("output_type") == "display_data"
                    and "application/vnd.jupyter.widget-view+json" in out.get("data", {})
                    and _PROGRESS_BAR.search("".join(out["data"].get("text/plain", "")))
                )
            ]
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def report(results: list[NotebookResult]) -> int:
    """Print a summary; the exit code is non-zero when any notebook failed."""
    total = sum(r.seconds for r in results)
    failed = [r for r in results if r.error]
    print(f"\n{len(results) - len(failed)} of {len(results)} notebooks ran in {total / 60:.1f} min")
    for r in failed:
        print(f"  FAILED {r.name}: {r.error}")
    return 1 if failed else 0
