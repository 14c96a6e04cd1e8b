"""The compose test harness removes what a session killed before its `down` left on the engine
(its stack comes back with the engine: restart: always), and nothing of a live session's."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

import pytest

from tests.helpers.compose_stack import OWNER_LABEL, abandoned, owner, reap_abandoned_stacks

PROJECT_LABEL = "com.docker.compose.project"


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_only_a_gone_session_of_this_host_is_abandoned():
    host, boot, pid = owner().split("/")
    assert pid == str(os.getpid()) and host == socket.gethostname()
    assert not abandoned(owner())
    assert abandoned(f"{host}/{boot}/{_dead_pid()}")
    assert abandoned(f"{host}/an-earlier-boot/{pid}")  # restart: always outlives a reboot
    assert not abandoned(f"another-host/{boot}/{_dead_pid()}")  # not ours to judge
    assert not abandoned("written by hand")


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _stack(image: str, project: str, owner_value: str) -> dict[str, str]:
    """A stand-in for a test stack: a compose-labelled network, volume and service
    container, and an unlabelled serving container on that network (as the release worker
    starts them)."""
    network = f"{project}-serving"
    _docker("network", "create", "--label", f"{PROJECT_LABEL}={project}", network)
    volume = _docker("volume", "create", "--label", f"{PROJECT_LABEL}={project}")
    service = _docker("run", "-d", "--network", network, "--label", f"{OWNER_LABEL}={owner_value}",
                      "--label", f"{PROJECT_LABEL}={project}", image, "sleep", "600")
    serving = _docker("run", "-d", "--network", network, image, "sleep", "600")
    return {"network": network, "volume": volume, "service": service, "serving": serving}


def _exists(kind: str, name: str) -> bool:
    return subprocess.run(["docker", kind, "inspect", name], capture_output=True).returncode == 0


def test_a_killed_sessions_stack_is_removed_and_a_live_ones_kept(docker_engine):
    image = docker_engine["RICE_BASE_IMAGE"]
    tag = uuid.uuid4().hex[:8]
    host, boot, _ = owner().split("/")
    dead, live = f"rice-ci-dead{tag}", f"rice-ci-live{tag}"
    left = _stack(image, dead, f"{host}/{boot}/{_dead_pid()}")
    kept = _stack(image, live, owner())
    try:
        reaped = reap_abandoned_stacks()
        assert dead in reaped and live not in reaped, reaped
        for kind, name in (("network", left["network"]), ("volume", left["volume"]),
                           ("container", left["service"]), ("container", left["serving"])):
            assert not _exists(kind, name), (kind, name)
        for kind, name in (("network", kept["network"]), ("volume", kept["volume"]),
                           ("container", kept["service"]), ("container", kept["serving"])):
            assert _exists(kind, name), (kind, name)
    finally:
        for stack in (left, kept):
            subprocess.run(["docker", "rm", "-f", stack["service"], stack["serving"]],
                           capture_output=True)
            subprocess.run(["docker", "network", "rm", stack["network"]], capture_output=True)
            subprocess.run(["docker", "volume", "rm", stack["volume"]], capture_output=True)


@pytest.mark.parametrize("owner_value", ["", "a|b", "../../etc"])
def test_a_strange_owner_label_is_left_alone(owner_value):
    assert not abandoned(owner_value)
