"""The one way this package reads a setting from the environment, and the one error it raises.

Every settings object of the pipeline, the webhook and the command line is built with these
readers (`rice_mlops.core.settings`, `rice_mlops.ingress.settings`,
`rice_mlops.operations.tool_settings`), and every variable they read is described once in
`rice_mlops.operations.settings_catalog`. A reader takes the environment as a mapping (tests pass a
dict), treats an unset or empty variable as its default, and refuses anything else it cannot use
with a `SettingsError` that says which variable, what it holds, what it accepts and what to do.
Only the serving package, which ships alone in the image, keeps its own parser
(`rice_mlops.serving.settings`), in the same style.

Standard library only: the webhook imports this module in the API server, the DAG files at parse
time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable holds a value that its reader cannot use.

    The message is one line: what the variable holds (`problem`, which names it), what it
    accepts, and what to do (by default: change it, or unset it), for example
    `RICE_EPOCHS='many' is not an integer; it accepts an integer ≥ 1: change it, or unset it
    for the default (25)`. `name` is the variable; a secret's value never appears.
    """

    def __init__(self, name: str, problem: str, accepts: str = "", todo: str = "") -> None:
        self.name, self.problem, self.accepts, self.todo = name, problem, accepts, todo
        accepted = f"; it accepts {accepts}" if accepts else ""
        super().__init__(f"{problem}{accepted}: {todo or 'change it, or unset it'}")

    def __reduce__(self):  # pickles (a process pool, a task runner) with its four parts
        return type(self), (self.name, self.problem, self.accepts, self.todo)


def text(env: Mapping[str, str], name: str, default: str = "") -> str:
    """The variable without surrounding blanks; `default` when unset or blank."""
    return env.get(name, "").strip() or default


def secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret exactly as set (blanks may be part of it); None when unset or empty."""
    return env.get(name) or None


def listed(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list, each item stripped, empty items dropped."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def parsed(env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T],
           what: str, accepts: str) -> T:
    """The variable through `parse`, `default` when unset or blank; a value `parse` refuses
    (ValueError) is a SettingsError: `{name}={raw} is not {what}`, and what it accepts."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(name, f"{name}={raw!r} is not {what}", accepts,
                            _todo(name, default)) from None


def integer(env: Mapping[str, str], name: str, default: int, low: int = 0,
            high: int | None = None) -> int:
    """A whole number from `low` to `high` (no upper bound when None)."""
    accepts = f"an integer ≥ {low}" if high is None else f"an integer from {low} to {high}"
    value = parsed(env, name, default, int, "an integer", accepts)
    if value < low or (high is not None and value > high):
        raise SettingsError(name, f"{name}={value} is out of bounds", accepts,
                            _todo(name, default))
    return value


def number(env: Mapping[str, str], name: str, default: float, low: float = 0.0, *,
           above: bool = False) -> float:
    """A finite number ≥ `low` (> `low` with `above`); nan and infinities are refused."""
    accepts = f"a number {'>' if above else '≥'} {low:g}"
    value = parsed(env, name, default, float, "a number", accepts)
    if not math.isfinite(value) or value < low or (above and value == low):
        raise SettingsError(name, f"{name}={value:g} is out of bounds", accepts,
                            _todo(name, default))
    return value


def fraction(env: Mapping[str, str], name: str, default: float, *,
             strict: bool = False) -> float:
    """A number from 0 to 1 (strictly between them with `strict`)."""
    accepts = ("a fraction strictly between 0 and 1" if strict
               else "a fraction from 0 to 1")
    value = parsed(env, name, default, float, "a number", accepts)
    inside = 0.0 < value < 1.0 if strict else 0.0 <= value <= 1.0
    if not inside:  # also refuses nan
        raise SettingsError(name, f"{name}={value:g} is out of bounds", accepts,
                            _todo(name, default))
    return value


def choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    """One of `allowed`, case-insensitive."""
    value = text(env, name, default).lower()
    if value not in allowed:
        raise SettingsError(name, f"{name}={value!r} is not an accepted value",
                            f"one of {', '.join(allowed)}", _todo(name, default))
    return value


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """`true` or `false`, case-insensitive."""
    return choice(env, name, str(default).lower(), ("true", "false")) == "true"


def _todo(name: str, default) -> str:
    return f"change it, or unset it for the default ({default})"
