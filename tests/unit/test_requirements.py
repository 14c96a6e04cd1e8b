"""Every requirement file is pinned to content, and the serving image installs the same
versions (and files) the pipeline was tested with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rice_mlops.release.pins import parse
from rice_mlops.release.wheels import INSTALLER

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"


@pytest.mark.parametrize("name", ["lock.txt", "dev.txt", "serving.txt", "installer.txt"])
def test_every_pin_has_a_hash(name):
    pins = parse(REQUIREMENTS / name)
    assert pins
    assert [pin.name for pin in pins.values() if not pin.hashes] == []


def test_serving_pins_and_hashes_come_from_the_lock():
    serving = parse(REQUIREMENTS / "serving.txt")
    lock = parse(REQUIREMENTS / "lock.txt")
    assert "ai-edge-litert" in serving
    # pip is the build stage's installer (rice_mlops.release.wheels.INSTALLER), not part of the
    # image.
    assert "pip" not in serving
    mismatched = {name: (pin.version, lock[name].version if name in lock else None)
                  for name, pin in serving.items()
                  if name not in lock or lock[name].version != pin.version
                  or lock[name].hashes != pin.hashes}
    assert mismatched == {}


def test_the_installer_is_the_pinned_pip():
    installer = parse(REQUIREMENTS / "installer.txt")
    assert f"pip=={installer['pip'].version}" == INSTALLER


def test_test_and_lint_tools_stay_out_of_the_lock():
    lock, dev = parse(REQUIREMENTS / "lock.txt"), parse(REQUIREMENTS / "dev.txt")
    for tool in ("pytest", "ruff", "playwright", "hypothesis", "pip-audit"):
        assert tool not in lock and tool in dev, tool
    assert set(lock) & set(dev) == set()  # pip refuses a package listed twice


def test_the_production_image_installs_the_lock_alone_with_hashes():
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert re.search(r"--require-hashes -r /opt/rice/requirements/lock.txt", dockerfile)
    assert "-r /opt/rice/requirements/dev.txt" not in dockerfile
