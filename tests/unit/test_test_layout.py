"""The tests' own layout: shared helpers live in tests/helpers/, conftest modules hold fixtures
and hooks only, and nothing imports a conftest module (pytest imports those itself)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = [REPO / "tests", REPO / "benchmarks"]


def _python_files() -> list[Path]:
    return sorted(path for root in SCANNED for path in root.rglob("*.py")
                  if "__pycache__" not in path.parts)


def _conftest_imports(source: str) -> list[int]:
    """Line numbers of imports that name a conftest module, absolute or relative."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")
            names = [alias.name for alias in node.names]
            if "conftest" in module or "conftest" in names:
                lines.append(node.lineno)
        elif isinstance(node, ast.Import):
            if any("conftest" in alias.name.split(".") for alias in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and node.args:
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            first = node.args[0]
            if name in ("import_module", "__import__") and isinstance(first, ast.Constant) \
                    and "conftest" in str(first.value).split("."):
                lines.append(node.lineno)
    return lines


# Spelled with a placeholder, so a grep of tests/ for such imports does not find these.
@pytest.mark.parametrize("source", [
    "from tests.CONFTEST import REPO",
    "from tests.integration.CONFTEST import SHA, dag_conf",
    "from .CONFTEST import free_port",
    "from . import CONFTEST",
    "import tests.CONFTEST",
    "import tests.integration.CONFTEST as shared",
    "def f():\n    from tests.integration.CONFTEST import GITHUB_TOKEN",
    "importlib.import_module('tests.CONFTEST')",
])
def test_the_check_sees_every_way_of_importing_a_conftest(source):
    assert _conftest_imports(source.replace("CONFTEST", "conftest"))


def test_the_check_leaves_helper_imports_alone():
    assert _conftest_imports("from tests.helpers.pipeline import SHA, dag_conf\n"
                             "import tests.helpers.ports\n") == []


def test_no_module_imports_a_conftest_module():
    found = [f"{path.relative_to(REPO)}:{line}" for path in _python_files()
             for line in _conftest_imports(path.read_text())]
    assert not found, "import these from tests.helpers.*, not from a conftest:\n" + \
        "\n".join(found)


def _is_fixture(node: ast.FunctionDef) -> bool:
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def test_conftest_modules_hold_only_fixtures_and_hooks():
    conftests = [path for path in _python_files() if path.name == "conftest.py"]
    assert conftests
    found = []
    for path in conftests:
        for node in ast.parse(path.read_text()).body:
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if not (_is_fixture(node) or node.name.startswith("pytest_")):
                    found.append(f"{where} function {node.name}")
            elif isinstance(node, ast.ClassDef):
                found.append(f"{where} class {node.name}")
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if any(not (n.startswith("_") or n == "pytest_plugins") for n in names):
                    found.append(f"{where} {', '.join(names)}")
    assert not found, "move these to tests/helpers/:\n" + "\n".join(found)
