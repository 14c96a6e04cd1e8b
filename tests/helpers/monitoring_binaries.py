"""Debian's Prometheus and Alertmanager as the tests run them outside the compose stack: the
binaries scripts/lint.sh unpacked into .run/tools, started on loopback until ready, and the
project's alert rules with their durations compressed so an alert's life fits in a test."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers.paths import REPO

RULES = REPO / "docker" / "prometheus" / "rules" / "rice.yml"
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                 "y": 31536000}
_DURATION = r"(?:\d+(?:ms|[smhdwy]))+"


def debian_binary(name: str) -> str:
    """`name` from PATH or .run/tools (unpacked by scripts/lint.sh, which the test command
    runs first); a skip that says so otherwise."""
    found = shutil.which(name) or str(REPO / ".run" / "tools" / "usr" / "bin" / name)
    if not Path(found).is_file():
        pytest.skip(f"Debian's {name} not unpacked yet (scripts/lint.sh does it first)")
    return found


def alertmanager_binary() -> str:
    """Debian's Alertmanager, with its default templates where the binary looks for them.

    Debian builds it to read /usr/share/prometheus/alertmanager (no flag moves it): when the
    package was unpacked, not installed, that directory is linked to the unpacked one, which
    is what installing the package would put there (as root; a skip otherwise)."""
    binary = debian_binary("prometheus-alertmanager")
    wanted = Path("/usr/share/prometheus/alertmanager")
    if not (wanted / "default.tmpl").is_file():
        unpacked = Path(binary).parents[1] / "share" / "prometheus" / "alertmanager"
        if os.geteuid() != 0 or not (unpacked / "default.tmpl").is_file():
            pytest.skip(f"Alertmanager's templates are not in {wanted} (install "
                        "prometheus-alertmanager, or run as root to link the unpacked ones)")
        wanted.parent.mkdir(parents=True, exist_ok=True)
        wanted.unlink(missing_ok=True)  # a dangling link from an earlier unpacking
        wanted.symlink_to(unpacked)
    return binary


@contextmanager
def started(command: list[str], ready_url: str, log: Path,
            timeout: float = 60) -> Iterator[subprocess.Popen]:
    """`command` running until the block ends, once `ready_url` answers 200."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"{Path(command[0]).name} exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"{Path(command[0]).name} not ready: {log.read_text()[-2000:]}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def seconds(duration: str) -> float:
    """A Prometheus duration (`5m`, `1h30m`, `250ms`) in seconds."""
    return sum(int(number) * _UNIT_SECONDS[unit]
               for number, unit in re.findall(r"(\d+)(ms|[smhdwy])", duration))


def compressed_rules(text: str, factor: int) -> str:
    """The rules file with every duration (`for:`, range selectors, `offset`) divided by
    `factor` (at least a second); expressions, thresholds and labels as they are. What the
    alert means is unchanged; it only happens `factor` times sooner."""
    def short(duration: str) -> str:
        return f"{max(1, math.ceil(seconds(duration) / factor))}s"

    text = re.sub(rf"(\bfor:\s*)({_DURATION})\b", lambda m: m[1] + short(m[2]), text)
    text = re.sub(rf"\[({_DURATION})(?::({_DURATION}))?\]",
                  lambda m: f"[{short(m[1])}" + (f":{short(m[2])}]" if m[2] else "]"), text)
    return re.sub(rf"(\boffset\s+)({_DURATION})\b", lambda m: m[1] + short(m[2]), text)
