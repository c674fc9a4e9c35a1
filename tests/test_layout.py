"""The library's layout is its architecture: each package imports only the packages below it.

``model`` must stay readable and testable alone, and ``data`` must not depend on the network
that reads it; a new import that breaks the layering fails here, with the file and the line.
"""

import ast
from pathlib import Path

import pytest

import reftx_lib

LIB = Path(reftx_lib.__file__).parent
# What each package may import from reftx_lib besides itself (the root modules constants and paths).
ALLOWED = {
    "constants": set(),
    "paths": set(),
    "model": {"constants"},
    "data": {"constants", "paths"},
    "train": {"constants", "paths", "model", "data"},
    "analysis": {"constants", "paths", "model", "data", "train"},
    "course": {"constants", "paths", "model", "data", "train", "analysis"},
    "bench": {"constants", "paths", "model", "data", "train", "course"},
}


def reftx_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level part of reftx_lib) for every import of reftx_lib in ``path``, relative ones
    resolved."""
    package = list(path.relative_to(LIB.parent).with_suffix("").parts)[:-1]  # e.g. ["reftx_lib", "model"]
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
        found += [(node.lineno, t[1]) for t in targets if len(t) > 1 and t[0] == "reftx_lib"]
    return found


def modules() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if p.parent != LIB or p.stem in ALLOWED)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(LIB)))
def test_each_package_imports_only_the_packages_below_it(path):
    part = path.relative_to(LIB).parts[0].removesuffix(".py")
    bad = [
        (line, target)
        for line, target in reftx_imports(path)
        if target != part and target not in ALLOWED[part]
    ]
    assert not bad, (
        f"{path.relative_to(LIB.parent)} imports "
        + ", ".join(f"reftx_lib.{t} (line {n})" for n, t in bad)
        + f"; {part} may import only {sorted(ALLOWED[part]) or 'nothing of reftx_lib'}"
    )


def test_the_rule_sees_relative_absolute_and_lazy_imports(tmp_path, monkeypatch):
    """The checker itself: a relative, an absolute and a function-level import are all found."""
    fake = tmp_path / "reftx_lib"
    (fake / "model").mkdir(parents=True)
    module = fake / "model" / "bad.py"
    module.write_text(
        "from ..data.batching import pad_batch\nimport reftx_lib.train.trainer\n"
        "def f():\n    from ..course import results\n    from . import layers\n"
    )
    monkeypatch.setattr(__import__(__name__), "LIB", fake)
    assert reftx_imports(module) == [(1, "data"), (2, "train"), (4, "course"), (5, "model")]


def test_every_module_belongs_to_a_package_with_a_rule():
    packages = {p.relative_to(LIB).parts[0].removesuffix(".py") for p in LIB.rglob("*.py")}
    assert packages - {"__init__", "__main__"} == set(ALLOWED)
