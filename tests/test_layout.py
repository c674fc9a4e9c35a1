"""The repository's layout is its architecture, and these tests hold it.

Three parts, each with one job: ``reftx_lib`` is what a student reads (the model, data, training and
attention tools), ``course`` runs the course beside it, and ``tools`` holds the lab equipment (the
benchmarks). Inside ``reftx_lib`` each package imports only the packages below it, so ``model`` stays
readable and testable alone and ``data`` never depends on the network that reads it. A new import
that breaks a rule fails here, with the file and the line; so does a library that grows past what a
student can read in one sitting.
"""

import ast
import json
import re
from pathlib import Path

import pytest

import reftx_lib

LIB = Path(reftx_lib.__file__).parent
ROOT = LIB.parent
PARTS = ("reftx_lib", "course", "tools")
# What each reftx_lib package may import from reftx_lib besides itself.
ALLOWED = {
    "constants": set(),
    "paths": set(),
    "model": {"constants"},
    "data": {"constants", "paths"},
    "train": {"constants", "paths", "model", "data"},
    "attention": {"constants", "model", "data"},
}
# What each part may import of the other two.
PART_ALLOWED = {"reftx_lib": set(), "course": {"reftx_lib"}, "tools": {"reftx_lib", "course"}}
LIB_MAX_LINES = 3000  # wc -l over reftx_lib: a library a student reads in one sitting
MODEL_FILES = ("layers.py", "transformer.py")  # the two files that hold the layers and the models
MODEL_MAX_LINES = 450  # nanoGPT's whole model is about 330 lines
FUNCTION_MAX_LINES = 60
NOTEBOOK_MAX_MODULES = 5  # project modules (reftx_lib.*, course.*) one notebook imports from


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, list[str]]]:
    """(line, dotted module as a list) for every import in ``path``, relative ones resolved."""
    package = list(path.relative_to(root).with_suffix("").parts)[:-1]  # e.g. ["reftx_lib", "model"]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            targets = [module + [alias.name] for alias in node.names] if not node.module else [module]
        elif isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        else:
            continue
        found += [(node.lineno, t) for t in targets]
    return found


def python_files(part: str) -> list[Path]:
    return sorted((ROOT / part).rglob("*.py"))


@pytest.mark.parametrize("path", python_files("reftx_lib"), ids=lambda p: str(p.relative_to(LIB)))
def test_each_library_package_imports_only_the_packages_below_it(path):
    part = path.relative_to(LIB).parts[0].removesuffix(".py")
    if part in ("__init__",):
        return
    bad = [
        (line, t[1])
        for line, t in imports_of(path)
        if len(t) > 1 and t[0] == "reftx_lib" and t[1] != part and t[1] not in ALLOWED[part]
    ]
    assert not bad, (
        f"{path.relative_to(ROOT)} imports "
        + ", ".join(f"reftx_lib.{t} (line {n})" for n, t in bad)
        + f"; {part} may import only {sorted(ALLOWED[part]) or 'nothing of reftx_lib'}"
    )


@pytest.mark.parametrize("part", PARTS)
def test_each_part_imports_only_what_it_may(part):
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {'.'.join(t)}"
        for path in python_files(part)
        for line, t in imports_of(path)
        if t[0] in PARTS and t[0] != part and t[0] not in PART_ALLOWED[part]
    ]
    assert not bad, f"{part} may import only {sorted(PART_ALLOWED[part]) or 'none of the others'}: {bad}"


def test_the_rule_sees_relative_absolute_and_lazy_imports(tmp_path):
    """The checker itself: a relative, an absolute and a function-level import are all found."""
    module = tmp_path / "reftx_lib" / "model" / "bad.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from ..data.batching import pad_batch\nimport course.results\n"
        "def f():\n    from ..train import loop\n    from . import layers\n"
    )
    assert [(n, t[:2]) for n, t in imports_of(module, tmp_path)] == [
        (1, ["reftx_lib", "data"]),
        (2, ["course", "results"]),
        (4, ["reftx_lib", "train"]),
        (5, ["reftx_lib", "model"]),
    ]


def test_every_library_module_belongs_to_a_package_with_a_rule():
    packages = {p.relative_to(LIB).parts[0].removesuffix(".py") for p in LIB.rglob("*.py")}
    assert packages - {"__init__"} == set(ALLOWED)


def line_count(paths) -> int:
    return sum(len(p.read_text().splitlines()) for p in paths)


def test_the_library_is_thin():
    lines = line_count(python_files("reftx_lib"))
    assert lines <= LIB_MAX_LINES, f"reftx_lib has {lines} lines; at most {LIB_MAX_LINES}"


def test_the_two_models_fit_in_two_files():
    lines = line_count(LIB / "model" / name for name in MODEL_FILES)
    assert lines <= MODEL_MAX_LINES, (
        f"the layers and the models take {lines} lines; at most {MODEL_MAX_LINES}"
    )


def long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_no_library_function_is_long():
    found = [f for p in python_files("reftx_lib") for f in long_functions(p, FUNCTION_MAX_LINES)]
    assert not found, f"functions over {FUNCTION_MAX_LINES} lines: {found}"


def test_the_length_rule_sees_a_long_function(tmp_path):
    module = tmp_path / "long.py"
    module.write_text("def f():\n" + "    x = 1\n" * 61)
    assert long_functions(module, FUNCTION_MAX_LINES) == ["long.py:1 f (62 lines)"]


def notebook_imports(path: Path) -> set[str]:
    """The project modules (reftx_lib.*, course.*, tools.*) a notebook's code cells import from."""
    modules = set()
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        source = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module:
                # ``from course import sweep`` imports the module course.sweep, not a name of course
                for alias in node.names:
                    module = ROOT.joinpath(*node.module.split("."), alias.name)
                    is_module = module.with_suffix(".py").exists() or (module / "__init__.py").exists()
                    modules.add(f"{node.module}.{alias.name}" if is_module else node.module)
            elif isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
    return {m for m in modules if m.split(".")[0] in PARTS}


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_imports_from_few_modules_and_never_the_tools(path):
    modules = notebook_imports(path)
    tools = sorted(m for m in modules if m.split(".")[0] == "tools")
    assert not tools, f"{path.name} imports the tools {tools}: read their stored results from results/"
    assert len(modules) <= NOTEBOOK_MAX_MODULES, (
        f"{path.name} imports from {len(modules)} project modules {sorted(modules)}; "
        f"at most {NOTEBOOK_MAX_MODULES}"
    )


def test_docs_name_only_modules_that_exist():
    """Every ``reftx_lib.x``, ``course.x`` or ``tools.x`` that a docstring, a convention file or the README
    names exists."""
    texts = [p for part in PARTS for p in python_files(part)]
    texts += [ROOT / "README.md", ROOT / "notebooks" / "CONVENTIONS.md"]
    missing = set()
    for path in texts:
        for name in re.findall(r"\b((?:reftx_lib|course|tools)(?:\.[a-z_]+)+)", path.read_text()):
            parts = name.split(".")
            # the longest prefix that is a module or package must exist, and cover at least two parts
            for n in range(len(parts), 1, -1):
                candidate = ROOT.joinpath(*parts[:n])
                if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
                    break
            else:
                missing.add(f"{name} ({path.relative_to(ROOT)})")
    assert not missing, f"modules named but missing: {sorted(missing)}"
