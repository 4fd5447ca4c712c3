"""The package's shape: imports go one way (base <- scenes <- extract <- transfer <- ahp <- taxonomy <- cli,
report, api), the report renders and solves nothing, and every run-folder file name is spelled in one module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT
from taskonomy.runfolder import FILES

# stage folder -> its level; the base (taskonomy/) is 0 and the application modules sit above every stage
LEVELS = {"taskonomy": 0, "scenes": 1, "extract": 2, "transfer": 3, "ahp": 4, "taxonomy": 5}
APPLICATION = {"taskonomy.cli", "taskonomy.report", "taskonomy.api", "taskonomy.__main__"}
SOLVERS = ("taskonomy.taxonomy.bip", "taskonomy.taxonomy.stage", "taskonomy.taxonomy.evaluate", "pulp", "highspy")


def modules() -> dict[str, Path]:
    """Import name -> file of every module of the package (the stage folders install under taskonomy.)."""
    out = {}
    for folder in LEVELS:
        for path in sorted((ROOT / folder).glob("*.py")):
            package = "taskonomy" if folder == "taskonomy" else f"taskonomy.{folder}"
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or lazily inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def level(module: str) -> int | None:
    if module in APPLICATION:
        return len(LEVELS)
    parts = module.split(".")
    if parts[0] != "taskonomy":
        return None
    return LEVELS.get(parts[1], 0) if len(parts) > 1 and parts[1] in LEVELS else 0


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_go_one_way(module):
    own = level(module)
    for imported in imports(modules()[module]):
        if module == "taskonomy" and imported.startswith("taskonomy.api"):
            continue  # the package's front door: `taskonomy.open_run`, imported lazily on first use
        target = level(imported)
        if target is None or imported.rsplit(".", 1)[0] in modules() and imported not in modules() \
                and level(imported.rsplit(".", 1)[0]) <= own:
            continue  # outside the package, or a name imported from an allowed module
        assert target <= own, f"{module} (level {own}) imports {imported} (level {target})"
        if module not in APPLICATION:
            assert imported not in APPLICATION, f"{module} imports the application module {imported}"


def test_the_report_solves_nothing():
    found = imports(modules()["taskonomy.report"])
    assert not [m for m in found if m.startswith(SOLVERS)], sorted(m for m in found if m.startswith(SOLVERS))


def _constants(path: Path) -> list[str]:
    """String constants of a module, docstrings left out (they may name files; code may not)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_every_run_folder_file_name_is_spelled_in_one_module():
    names = set(FILES.values()) | {"all_for_one_", "taxonomy_budget_"}
    spelled = {}
    for module, path in modules().items():
        for constant in _constants(path):
            for name in names:
                # the name itself, or a path or an f-string piece ending in it ('/affinity.csv', 'models/'); a
                # folder's bare name is also a word ('report' is a stage), so only its path spellings count
                exact = constant == name and "." in name
                if exact or constant.endswith("/" + name) or constant.startswith(name + "/"):
                    spelled.setdefault(name, set()).add(module)
    elsewhere = {name: sorted(found - {"taskonomy.runfolder"}) for name, found in spelled.items()
                 if found - {"taskonomy.runfolder"}}
    assert not elsewhere, elsewhere
