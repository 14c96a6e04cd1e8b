"""Who brought a test stack's containers and networks up (a label on each), and the removal
of what sessions killed before their `down` left on the engine."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

# Who brought a test stack's containers and networks up: host, boot and process. A session
# killed before its `down` leaves them (restart: always brings them back with the engine), and
# they hold subnets, CPU and memory the next session needs.
OWNER_LABEL = "rice.ci.owner"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:  # a minimal container may lack it: then it compares equal to itself
        return ""


def _started(pid: int | str) -> str:
    """The process's start time in clock ticks since boot (a reused pid has another)."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split()[19] if stat else ""


def _process_space() -> list[str]:
    """What must equal ours for a pid to mean the same process: host name, machine, and the
    pid namespace (and then the boot)."""
    return [socket.gethostname(), _read("/etc/machine-id"),
            os.readlink("/proc/self/ns/pid").strip("pid:[]")]


def owner() -> str:
    """This session as a label value: host/machine/pid namespace/boot/pid/start time."""
    return "/".join([*_process_space(), _read("/proc/sys/kernel/random/boot_id"),
                     str(os.getpid()), _started(os.getpid())])


def owner_labels(compose_file: Path) -> dict:
    """A compose file that labels every service of `compose_file` with this process."""
    import yaml

    services = yaml.safe_load(compose_file.read_text())["services"]
    return {"services": {name: {"labels": {OWNER_LABEL: owner()}} for name in services}}


def abandoned(owner_value: str) -> bool:
    """Whether the session that wrote `owner_value` is gone: one of this host, machine and pid
    namespace, and either from an earlier boot or of a process that is no longer the one that
    wrote it. Anything else (another host, machine or namespace; a value we did not write) is
    never judged."""
    fields = owner_value.split("/")
    if len(fields) != 6 or fields[:3] != _process_space() or not fields[4].isdigit():
        return False
    boot, pid, started = fields[3:]
    if boot != _read("/proc/sys/kernel/random/boot_id"):
        return True  # restart: always brought it back after a reboot
    return _started(pid) != started  # gone, or the pid is another process's now


def _docker_lines(*args: str) -> list[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def _labelled(kind: str, column: str) -> list[tuple[str, str]]:
    """(owner, `column`) of each container or network that carries the owner label; a line
    that does not parse is skipped (a label someone else wrote)."""
    listed = _docker_lines(*(["ps", "-a"] if kind == "container" else ["network", "ls"]),
                           "--filter", f"label={OWNER_LABEL}", "--format",
                           f'{{{{.Label "{OWNER_LABEL}"}}}}|{column}')
    return [(value, other) for value, bar, other in (line.rpartition("|") for line in listed)
            if bar]


def _attached(networks: set[str]) -> list[str]:
    """Every container on one of `networks`, stopped ones too (`docker ps --filter network`
    misses a container that never started, and restart: always starts it with the engine)."""
    if not networks or not (every := _docker_lines("ps", "-aq")):
        return []
    fmt = "{{.Id}} {{.HostConfig.NetworkMode}} {{range $name, $_ := .NetworkSettings.Networks}}" \
          "{{$name}} {{end}}"
    inspected = subprocess.run(["docker", "inspect", "--format", fmt, *every],
                               capture_output=True, text=True).stdout.splitlines()
    return [words[0] for words in map(str.split, inspected)
            if len(words) > 1 and networks & set(words[1:])]


def reap_abandoned_stacks() -> list[str]:
    """Remove the containers, networks and volumes of test stacks whose session is gone
    (`abandoned`), and the serving containers on those networks (the release worker's, not
    compose's): the compose projects and networks removed."""
    projects = {project for value, project in _labelled(
                    "container", '{{.Label "com.docker.compose.project"}}')
                if project and abandoned(value)}
    labelled = [name for value, name in _labelled("network", "{{.Name}}")
                if name and abandoned(value)]
    networks = list(labelled)
    for project in sorted(projects):
        networks += _docker_lines("network", "ls", "--format", "{{.Name}}", "--filter",
                                  f"label=com.docker.compose.project={project}")
    if attached := _attached(set(networks)):
        subprocess.run(["docker", "rm", "-f", *attached], capture_output=True)
    for project in sorted(projects):
        label = f"label=com.docker.compose.project={project}"
        if containers := _docker_lines("ps", "-aq", "--filter", label):
            subprocess.run(["docker", "rm", "-f", *containers], capture_output=True)
        if volumes := _docker_lines("volume", "ls", "-q", "--filter", label):
            subprocess.run(["docker", "volume", "rm", "-f", *volumes], capture_output=True)
    if networks:
        subprocess.run(["docker", "network", "rm", *networks], capture_output=True)
    return sorted(projects) + sorted(labelled)
