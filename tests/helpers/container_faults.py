"""Faults on the compose stack's services, broken the way production breaks them: a
container's init process SIGKILLed from the host (the OOM killer, a node drain; Docker's
restart policy brings it back, as it would), and the waits until Docker restarted it and it is
healthy. `docker-compose restart` (a deploy, a crash loop) and `stop`/`start` (a registry
taken away and given back) are the stack's own `compose` calls. A driver injects each fault
the moment a task reaches a state (tests/helpers/retrying_airflow.py watches the run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from tests.helpers.compose_project import ComposeStack


def containers(stack: ComposeStack, service: str | None = None) -> list[dict]:
    """`docker inspect` of the stack's containers (of one service), its remote worker's
    (another compose project) included."""
    projects = [stack.project_of(service)] if service else [stack, *filter(None, [stack.remote])]
    ids = [found for project in projects
           for found in project.compose("ps", "-q", *([service] if service else [])).stdout.split()]
    if not ids:
        return []
    return json.loads(subprocess.run(["docker", "inspect", *ids], check=True,
                                     capture_output=True, text=True).stdout)


def container_of_host(stack: ComposeStack, hostname: str) -> dict:
    """The container whose hostname (its short id) a task instance recorded."""
    for container in containers(stack):
        if hostname and (container["Id"].startswith(hostname)
                         or container["Config"]["Hostname"] == hostname):
            return container
    raise LookupError(f"no container of the stack has hostname {hostname!r}")


def service_of(container: dict) -> str:
    return container["Config"]["Labels"]["com.docker.compose.service"]


def sigkill(container: dict) -> int:
    """SIGKILL the container's init process from the host, as the OOM killer or a node drain
    would: every process in it dies, and Docker's restart policy (not a person) restarts it."""
    pid = container["State"]["Pid"]
    if not pid:
        raise RuntimeError(f"{container['Name']} is not running")
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_restarted(container: dict, timeout: float = 180) -> None:
    """Until Docker restarted the container after a kill (its restart count went up)."""
    deadline, before = time.monotonic() + timeout, container["RestartCount"]
    while time.monotonic() < deadline:
        now = json.loads(subprocess.run(["docker", "inspect", container["Id"]], check=True,
                                        capture_output=True, text=True).stdout)[0]
        if now["RestartCount"] > before and now["State"]["Running"]:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{container['Name']} not restarted within {timeout:.0f}s")


def wait_service_healthy(stack: ComposeStack, service: str, timeout: float = 300) -> None:
    """Until every container of `service` reports healthy (or runs, without a check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = containers(stack, service)
        if found and all(c["State"]["Running"] and c["State"].get("Health", {}).get(
                "Status", "healthy") == "healthy" for c in found):
            return
        time.sleep(1)
    raise TimeoutError(f"{service} not healthy within {timeout:.0f}s")
