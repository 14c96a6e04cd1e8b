"""What the repository's scripts print with `env` (`export KEY=value` lines), read without a
shell."""

from __future__ import annotations

import shlex
import subprocess

from tests.helpers.paths import REPO


def docker_engine_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """What `scripts/docker-engine env` prints (local images, registry, its credentials)."""
    out = subprocess.run([REPO / "scripts" / "docker-engine", "env"], env=env, check=True,
                         capture_output=True, text=True).stdout
    return parse_env_lines(out)


def parse_env_lines(text: str) -> dict[str, str]:
    """`export KEY=value` lines quoted for the shell, read without a shell."""
    values = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) != 2 or words[0] != "export" or "=" not in words[1]:
            raise ValueError(f"not an `export KEY=value` line: {line!r}")
        key, value = words[1].split("=", 1)
        values[key] = value
    return values
