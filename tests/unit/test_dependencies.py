"""Declared dependencies are the used ones: every distribution the code imports is declared in
requirements/*.in, nothing is declared that nothing imports (but for the few needed without an
import, each named with its reason), and the serving package imports only what its image
installs (requirements/serving.txt)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from rice_mlops.release.pins import canonical, parse

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
PRODUCT = [REPO / "include" / "rice_mlops", REPO / "dags", REPO / "plugins"]
TOOLS = [REPO / "tests", REPO / "benchmarks", REPO / "scripts"]
SERVING = REPO / "include" / "rice_mlops" / "serving"
# Declared though nothing imports them, and why.
NOT_IMPORTED = {
    "apache-airflow-providers-postgres": "the compose stack's metadata database",
    "async-timeout": "redis on Python < 3.11.3",
}


def imported_modules(roots: list[Path]) -> dict[str, set[str]]:
    """Absolute import -> the files that import it, for every module under `roots`."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


_OWNERS = packages_distributions()


def distribution(module: str) -> str | None:
    """The distribution that provides `module`; None for the standard library and our own."""
    parts = module.split(".")
    first_party = ("rice_mlops", "tests", "plugins", "__future__")
    if parts[0] in sys.stdlib_module_names or parts[0] in first_party:
        return None
    if parts[:2] == ["airflow", "providers"] and len(parts) > 2:
        provider = parts[2:4] if parts[2] == "common" and len(parts) > 3 else parts[2:3]
        return "apache-airflow-providers-" + "-".join(provider).replace("_", "-")
    if parts[0] == "airflow":
        return "apache-airflow"
    owners = _OWNERS.get(parts[0])
    if not owners:
        return f"unknown:{parts[0]}"
    # tensorflow-cpu provides `tensorflow`; mlflow's module comes with three distributions.
    for preferred in ("tensorflow-cpu", "mlflow"):
        if canonical(preferred) in map(canonical, owners):
            return preferred
    return canonical(sorted(owners)[0])


def declared(name: str) -> set[str]:
    names = set()
    for raw in (REQUIREMENTS / name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            names.add(canonical(re.split(r"[\[=<>!~ ;]", line, maxsplit=1)[0]))
    return names


def _local(roots: list[Path]) -> set[str]:
    """Top-level names the roots hold themselves (a benchmark importing its sibling)."""
    return {root.name for root in roots} | {
        path.stem if path.suffix == ".py" else path.name
        for root in roots for path in root.iterdir() if path.suffix == ".py" or path.is_dir()}


def _used(roots: list[Path]) -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    local = _local(roots)
    for module, files in imported_modules(roots).items():
        if module.split(".")[0] in local:
            continue
        if (owner := distribution(module)) is not None:
            used.setdefault(canonical(owner), set()).update(files)
    return used


def test_every_distribution_the_pipeline_imports_is_declared_in_base_in():
    used = _used(PRODUCT)
    missing = {name: sorted(files)[:3] for name, files in used.items()
               if name not in declared("base.in")}
    assert missing == {}, "imported but not declared in requirements/base.in"


def test_nothing_is_declared_that_nothing_imports():
    used = set(_used(PRODUCT))
    unused = declared("base.in") - used - {canonical(n) for n in NOT_IMPORTED}
    assert unused == set(), "declared in requirements/base.in, imported nowhere"
    assert {canonical(n) for n in NOT_IMPORTED} <= declared("base.in")


def test_every_distribution_the_tests_and_tools_import_is_declared():
    used = _used(TOOLS)
    missing = {name: sorted(files)[:3] for name, files in used.items()
               if name not in declared("base.in") | declared("dev.in")}
    assert missing == {}, "imported by tests, benchmarks or scripts, declared nowhere"


def test_the_serving_package_imports_only_what_its_image_installs():
    installed = set(parse(REQUIREMENTS / "serving.txt"))
    used = _used([SERVING])
    assert set(used) - installed == set(), "the serving image would not have these"


def test_versions_have_one_home():
    """pyproject.toml names the distributions; their versions live in requirements/ alone."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = [*project["dependencies"],
              *(d for extra in project.get("optional-dependencies", {}).values() for d in extra)]
    pinned = [d for d in listed if re.search(r"[=<>~!]", d)]
    assert pinned == [], "a version in pyproject.toml: keep it in requirements/ alone"


@pytest.mark.parametrize(("module", "owner"), [
    ("airflow.providers.common.compat.sdk", "apache-airflow-providers-common-compat"),
    ("airflow.providers.smtp.hooks.smtp", "apache-airflow-providers-smtp"),
    ("airflow.sdk", "apache-airflow"),
    ("PIL.Image", "pillow"),
    ("tensorflow", "tensorflow-cpu"),
    ("json", None),
])
def test_modules_are_traced_to_their_distributions(module, owner):
    assert distribution(module) == owner
