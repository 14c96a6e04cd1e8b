"""The serving image installs the same versions the pipeline was tested with."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_serving_pins_match_the_lock():
    serving = _pins(REPO / "requirements" / "serving.txt")
    lock = _pins(REPO / "requirements" / "lock.txt")
    assert "ai-edge-litert" in serving
    # pip is the build stage's installer (rice_mlops.image.INSTALLER), not part of the image.
    assert "pip" not in serving
    mismatched = {name: (version, lock.get(name)) for name, version in serving.items()
                  if lock.get(name) != version}
    assert mismatched == {}
