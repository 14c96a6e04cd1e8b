"""The repository's `scripts/mlflow-server`, driven from tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers.paths import REPO
from tests.helpers.ports import free_port
from tests.helpers.script_env import parse_env_lines


class MlflowServer:
    """The repository's `scripts/mlflow-server`, on its own port and directory, with MLflow's
    basic-auth app: the pipeline's credentials from `env`, the admin's from its file."""

    def __init__(self, home: Path):
        self.port = free_port()
        self.home = home
        self.url = f"http://127.0.0.1:{self.port}"

    def _script(self, command: str) -> str:
        env = {**os.environ, "MLFLOW_PORT": str(self.port), "MLFLOW_HOME": str(self.home)}
        return subprocess.run([REPO / "scripts" / "mlflow-server", command], env=env,
                              check=True, timeout=120, capture_output=True, text=True).stdout

    def start(self) -> None:
        self._script("start")

    @property
    def credentials(self) -> dict[str, str]:
        """MLFLOW_TRACKING_URI, _USERNAME and _PASSWORD of the pipeline's user."""
        return parse_env_lines(self._script("env"))

    @property
    def admin(self) -> tuple[str, str]:
        return "admin", (self.home / "admin_password").read_text().strip()

    def stop(self) -> None:
        self._script("stop")
