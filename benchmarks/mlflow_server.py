"""The repository's MLflow server for a benchmark: started, and this process logged in as the
pipeline's user (the server refuses anonymous clients), stopped on exit."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mlflow-server"


@contextmanager
def mlflow_server(port: int, home: Path) -> Iterator[str]:
    env = {**os.environ, "MLFLOW_PORT": str(port), "MLFLOW_HOME": str(home)}
    subprocess.run([SCRIPT, "start"], env=env, check=True)
    try:
        printed = subprocess.run([SCRIPT, "env"], env=env, check=True, capture_output=True,
                                 text=True).stdout
        for line in printed.splitlines():  # `export KEY=value`, quoted for the shell
            key, value = shlex.split(line)[1].split("=", 1)
            os.environ[key] = value
        yield os.environ["MLFLOW_TRACKING_URI"]
    finally:
        subprocess.run([SCRIPT, "stop"], env=env, check=False)
