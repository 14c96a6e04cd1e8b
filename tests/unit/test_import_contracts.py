"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they bite: a copy of the
package with one forbidden import fails `lint-imports`, naming the contract it breaks.

`scripts/lint.sh` runs the same command on the tree itself in the test command; these tests run
it on temporary copies, so a contract that could never fail would be caught here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "include" / "rice_mlops", tmp_path / "include" / "rice_mlops",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "include")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", "pyproject.toml"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _add_import(root: Path, module: str, statement: str) -> None:
    path = root / "include" / Path(*module.split(".")).with_suffix(".py")
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    assert marker in text, path
    path.write_text(text.replace(marker, f"{marker}\n{statement}\n", 1))


def test_the_tree_keeps_every_contract(tmp_path):
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "statement", "contract"), [
    ("rice_mlops.serving.app", "import rice_mlops.core.settings  # noqa",
     "The serving package ships alone"),
    ("rice_mlops.compute.gate", "import rice_mlops.release.signing  # noqa",
     "The compute zone never imports the release zone"),
    ("rice_mlops.release.sbom", "import rice_mlops.compute.model  # noqa",
     "The release zone never imports the compute zone"),
    ("rice_mlops.publication.outcome", "import airflow.sdk  # noqa",
     "Only stages and operations import Airflow"),
    ("rice_mlops.core.handoffs", "import rice_mlops.release.image  # noqa",
     "The core imports nothing above it"),
    ("rice_mlops.ingress.limits", "import rice_mlops.ingress.app  # noqa",
     "No import circles"),
])
def test_one_forbidden_import_breaks_its_contract(tmp_path, module, statement, contract):
    root = _copy(tmp_path)
    _add_import(root, module, statement)
    result = _lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
    # The report names the importing module (a circle by its name within the package).
    assert module in result.stdout or f".{module.rsplit('.', 1)[1]} ->" in result.stdout
