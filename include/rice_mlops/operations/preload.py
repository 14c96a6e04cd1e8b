"""Libraries imported once in the processes that fork task processes, so every task inherits
them instead of importing them again.

Airflow starts each task in a fork of its worker: the LocalExecutor's workers are forks of the
scheduler, a Celery worker's pool processes forks of the worker's main process. A library the
parent imported before forking costs its children nothing; one they import themselves costs
every task again. MLflow's client is the measured case: 1.4–3.5 s of CPU per task that talks
to MLflow (about ten a run) on two cores that also train (benchmarks/README.md). TensorFlow is
left out: it is 660 MB, used by one task, and its runtime is not meant to be forked.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence

# The setting and its parser live with the other tool settings; preload only acts on them.
from rice_mlops.operations.tool_settings import (  # noqa: F401
    TASK_LIBRARIES,
    ToolSettings,
    module_names,
)

log = logging.getLogger(__name__)


def forks_tasks(argv: Sequence[str], executor: Callable[[], str]) -> bool:
    """Whether this Airflow process is the parent of task processes: a Celery worker, or the
    scheduler when its executor is the LocalExecutor (`executor` is asked only then)."""
    command = list(argv[1:3])
    if command == ["celery", "worker"]:
        return True
    if command[:1] == ["scheduler"]:
        first = executor().split(",")[0].strip()
        return first.rsplit(".", 1)[-1] == "LocalExecutor"
    return False


def preload(argv: Sequence[str], executor: Callable[[], str],
            libraries: Sequence[str] | None = None) -> list[str]:
    """Import `libraries` (by default what RICE_PRELOAD configures) when this process forks
    tasks; returns what was imported. A library that fails to import is logged and left to
    the task that needs it, which then fails with the library's own error."""
    if libraries is None:
        libraries = ToolSettings.from_env().preload
    if not libraries or not forks_tasks(argv, executor):
        return []
    loaded = []
    for name in libraries:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the process must start regardless
            log.warning("not preloaded for tasks: %s (%s: %s)", name, type(exc).__name__, exc)
        else:
            loaded.append(name)
    return loaded
