"""The worker "on another machine": docker-compose.worker.yaml in a compose project of its
own on the stack's remote network, with the worker.env a person would write."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.compose_project import REMOTE_SERVICE, ComposeStack
from tests.helpers.paths import REPO
from tests.helpers.stack_ownership import OWNER_LABEL, owner

CONTROL_PLANE_HOST = "rice-control-plane"
WORKER_ENV_EXAMPLE = REPO / "worker.env.example"


def up_remote_worker(stack: ComposeStack, name: str, settings: dict[str, str] | None = None,
                     environment: dict[str, str] | None = None, wait: bool = True
                     ) -> ComposeStack:
    """docker-compose.worker.yaml in a project of its own on the stack's remote network, with
    the worker.env a person would write from the control plane's .env (docs/compose.md "Add a
    machine"); `settings` change its values (a wrong password, say), `environment` is laid
    over the service's. With `wait`, until its health check passes."""
    root = Path(stack.env["RICE_TLS_DIR"]).parent
    # What the example asks for and the control plane's .env holds is copied as it is (the
    # secrets, the image, the ports, the pipeline settings); the rest says where the control
    # plane is and what it is called.
    listed = [line.split("=", 1)[0] for line in WORKER_ENV_EXAMPLE.read_text().splitlines()
              if line and not line.startswith("#")]
    worker_env = {
        **{key: stack.env[key] for key in listed if key in stack.env},
        "RICE_CONTROL_PLANE_ADDRESS": stack.env["RICE_PUBLISH_ADDRESS"],
        "RICE_CONTROL_PLANE_HOST": CONTROL_PLANE_HOST,
        "RICE_CA_FILE": str(Path(stack.env["RICE_TLS_DIR"]) / "worker" / "ca.crt"),
        **(settings or {}),
    }
    env_file = root / f"worker-{name}.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"{key}={value}\n" for key, value in worker_env.items()))
    # Its own LAN, and training's share of contended cores as on the stack's training worker.
    override = {"services": {REMOTE_SERVICE: {"cpu_shares": 256,
                                              "environment": dict(environment or {}),
                                              "labels": {OWNER_LABEL: owner()}}},
                "networks": {"default": {"external": True,
                                         "name": stack.env["RICE_CI_REMOTE_NETWORK"]}}}
    override_file = root / f"worker-{name}.override.yaml"
    override_file.write_text(json.dumps(override, indent=2))
    project = stack.command[stack.command.index("-p") + 1] + f"-{name}"
    remote = ComposeStack(["docker-compose", "-p", project, "--env-file", str(env_file),
                           "-f", str(REPO / "docker-compose.worker.yaml"),
                           "-f", str(override_file)], worker_env)
    try:
        up = remote.compose("up", "-d", "--no-build", timeout=600)
        if up.returncode != 0:
            raise RuntimeError(f"the remote worker did not start: {up.stderr[-3000:]}")
        if wait:
            waiting = remote.wait_healthy(timeout=300)
            if waiting:
                logs = remote.compose("logs", "--no-color", "--tail", "60").stdout[-4000:]
                raise RuntimeError(f"the remote worker is not healthy: {waiting}\n{logs}")
    except BaseException:
        remote.compose("down", "--volumes", timeout=300)  # the caller never gets to
        raise
    return remote
