"""The compose test harness removes what a session killed before its `down` left on the engine
(its stack comes back with the engine: restart: always), and nothing of a live session's,
another machine's or one it cannot read."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.helpers.paths import REPO
from tests.helpers.stack_ownership import OWNER_LABEL, abandoned, owner, reap_abandoned_stacks

PROJECT_LABEL = "com.docker.compose.project"


def _gone_session() -> str:
    """The owner value a process that has exited wrote."""
    value = subprocess.run([sys.executable, "-c", "from tests.helpers.stack_ownership import "
                            "owner; print(owner())"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert value.count("/") == 5, value
    return value


def _with(value: str, index: int, field: str) -> str:
    fields = value.split("/")
    fields[index] = field
    return "/".join(fields)


def test_only_a_gone_session_of_this_host_machine_and_namespace_is_abandoned():
    mine = owner()
    assert mine.split("/")[4] == str(os.getpid())
    assert not abandoned(mine)
    gone = _gone_session()
    assert abandoned(gone)
    assert abandoned(_with(mine, 3, "an-earlier-boot"))  # restart: always outlives a reboot
    assert abandoned(_with(mine, 5, "1"))  # our pid, but another process once held it
    for index, other in ((0, "another-host"), (1, "another-machine"), (2, "4026500000")):
        assert not abandoned(_with(gone, index, other)), other  # not ours to judge


@pytest.mark.parametrize("value", ["", "written by hand", "a|b", "../../etc", "/////",
                                   "a/b/c/d/not-a-pid/e"])
def test_a_value_we_did_not_write_is_never_abandoned(value):
    assert not abandoned(value)


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def _stack(image: str, project: str, owner_value: str) -> dict[str, str]:
    """A stand-in for a test stack: a compose-labelled network, volume and service
    container, a serving container on that network as the release worker starts them (no
    labels, stopped), and a network of its own as the remote worker's (owner-labelled)."""
    network = f"{project}-serving"
    _docker("network", "create", "--label", f"{PROJECT_LABEL}={project}", network)
    remote = f"{project}-remote"
    _docker("network", "create", "--label", f"{OWNER_LABEL}={owner_value}", remote)
    volume = _docker("volume", "create", "--label", f"{PROJECT_LABEL}={project}")
    service = _docker("run", "-d", "--network", network, "--label", f"{OWNER_LABEL}={owner_value}",
                      "--label", f"{PROJECT_LABEL}={project}", image, "sleep", "600")
    serving = _docker("create", "--network", network, image, "sleep", "600")
    return {"network": network, "remote": remote, "volume": volume, "service": service,
            "serving": serving}


def _exists(kind: str, name: str) -> bool:
    return subprocess.run(["docker", kind, "inspect", name], capture_output=True).returncode == 0


def _remove(stack: dict[str, str]) -> None:
    subprocess.run(["docker", "rm", "-f", stack["service"], stack["serving"]],
                   capture_output=True)
    subprocess.run(["docker", "network", "rm", stack["network"], stack["remote"]],
                   capture_output=True)
    subprocess.run(["docker", "volume", "rm", stack["volume"]], capture_output=True)


def test_a_killed_sessions_stack_is_removed_and_the_rest_kept(docker_engine):
    image = docker_engine["RICE_BASE_IMAGE"]
    tag = uuid.uuid4().hex[:8]
    gone = _gone_session()
    dead, live, foreign = f"rice-ci-dead{tag}", f"rice-ci-live{tag}", f"rice-ci-foreign{tag}"
    stacks = {}
    try:
        stacks[dead] = _stack(image, dead, gone)
        stacks[live] = _stack(image, live, owner())
        stacks[foreign] = _stack(image, foreign, "written by hand")
        reaped = reap_abandoned_stacks()
        assert dead in reaped and f"{dead}-remote" in reaped, reaped
        assert not {live, foreign, f"{live}-remote", f"{foreign}-remote"} & set(reaped), reaped
        for name, stack in stacks.items():
            for kind, key in (("network", "network"), ("network", "remote"),
                              ("volume", "volume"), ("container", "service"),
                              ("container", "serving")):
                assert _exists(kind, stack[key]) == (name != dead), (name, kind, key)
    finally:
        for stack in stacks.values():
            _remove(stack)
