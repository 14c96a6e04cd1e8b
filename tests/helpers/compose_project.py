"""One docker-compose project as the tests hold it (the stack, or its remote worker's
project): its command and .env, the addresses it publishes on loopback, its services'
states and health."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.paths import REPO

ONE_SHOT = ("airflow-init", "registry-init", "mlflow-users", "prometheus-init")
REMOTE_SERVICE = "airflow-worker-remote"


@dataclass
class ComposeStack:
    command: list[str]
    env: dict[str, str]
    # The worker "on another machine" (docker-compose.worker.yaml in a project of its own), when
    # the stack was started with one.
    remote: ComposeStack | None = None

    def project_of(self, service: str) -> ComposeStack:
        """The compose project that runs `service`: the remote worker's own, or this one."""
        return self.remote if self.remote is not None and service == REMOTE_SERVICE else self

    @property
    def staging(self) -> Path:
        return Path(self.env["RICE_STAGING_DIR"])

    @property
    def airflow(self) -> str:
        return f"http://127.0.0.1:{self.env['AIRFLOW_PORT']}"

    @property
    def webhook(self) -> str:
        """The webhook through the stack's proxy (what GitHub is given)."""
        return f"http://127.0.0.1:{self.env['WEBHOOK_PORT']}/webhooks/github"

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.env['MLFLOW_PORT']}"

    @property
    def mlflow_pipeline(self) -> tuple[str, str]:
        return self.env["MLFLOW_PIPELINE_USERNAME"], self.env["MLFLOW_PIPELINE_PASSWORD"]

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.env['REGISTRY_PORT']}"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO)

    def service_states(self) -> dict[str, str]:
        """Service -> health ("healthy", "starting", ...) or "exited <code>" for one-shots."""
        ids = self.compose("ps", "-q", "-a").stdout.split()
        inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True,
                                              text=True, check=True).stdout)
        states = {}
        for container in inspected:
            service = container["Config"]["Labels"]["com.docker.compose.service"]
            state = container["State"]
            if state["Status"] == "exited":
                states[service] = f"exited {state['ExitCode']}"
            else:
                states[service] = state.get("Health", {}).get("Status", state["Status"])
        return states

    def wait_healthy(self, timeout: float = 300) -> dict[str, str]:
        """Wait until every long-running service is healthy; returns what is not."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.service_states()
            waiting = {name: state for name, state in states.items()
                       if name not in ONE_SHOT and state != "healthy"}
            if not waiting or time.monotonic() > deadline:
                return waiting
            time.sleep(2)


def compose_exec(stack: ComposeStack, service: str, *command: str, env: dict | None = None):
    """`compose exec` with variables passed by name: their values stay off the command line.
    The remote worker's service is in its own project."""
    import os

    names = [arg for key in (env or {}) for arg in ("-e", key)]
    project = stack.project_of(service)
    return subprocess.run([*project.command, "exec", "-T", *names, service, *command],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **(env or {})})
