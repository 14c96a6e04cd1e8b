"""`make setup` (scripts/setup.sh) refuses a package whose content is not the one the lock
hashes, and says which and what to do."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from rice_mlops.release.pins import parse
from tests.helpers.paths import REPO

pytestmark = pytest.mark.integration


def test_a_lock_with_a_changed_hash_stops_the_setup(tmp_path):
    lock = parse(REPO / "requirements" / "lock.txt")
    six = lock.get("six") or lock["idna"]  # small, pure-Python, no dependencies
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    requirements = tmp_path / "requirements"
    requirements.mkdir()
    shutil.copy(REPO / "requirements" / "installer.txt", requirements / "installer.txt")
    # One changed hex digit in every hash: what a tampered mirror or a hand edit looks like.
    forged = {h[:-1] + ("0" if h[-1] != "0" else "1") for h in six.hashes}
    (requirements / "lock.txt").write_text(
        f"{six.name}=={six.version}" + "".join(f" --hash=sha256:{h}" for h in forged) + "\n")
    (requirements / "dev.txt").write_text("")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    result = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ})
    assert result.returncode != 0
    assert "does not match the sha256 pinned in requirements/lock.txt" in result.stderr, \
        result.stderr
    assert six.name in result.stderr and "make lock" in result.stderr
    assert not list((tmp_path / ".venv").glob(".setup-*"))  # not marked as built
