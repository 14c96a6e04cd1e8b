"""The release zone's hands on the Docker engine: serving containers in two slots and the
serving proxy, started, reloaded and stopped through the engine's API (the docker SDK).

Only the worker that holds the socket imports this. Every container runs with ports from the
settings, a read-only root, no capabilities, no new privileges, a memory cap, `unless-stopped`
(a restarted engine brings back what served), and labels that say which slot and which digest
it holds, so the state can be checked against what runs. Where the worker runs on the host
(`make demo`), the containers use host networking and listen on 127.0.0.1. Where it runs in a
container (compose), they join a network of their own at fixed addresses (`Layout.network`),
which the worker joins too, and only the proxy is published, on the host's 127.0.0.1. A
serving container is started only from a `host/name@sha256:` reference the caller has
verified; the proxy reads its configuration from the release zone's directory, mounted
read-only.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from rice_mlops.release.rollout.state import SLOTS

LABEL = "io.rice-mlops.serving"
PROXY_CONF_DIR = "/etc/rice-serving-proxy"  # in the proxy container
PROXY_RUN_DIR = "/run/rice-serving-proxy"  # a tmpfs in the proxy container
LOG_DIR_IN_CONTAINER = "/var/log/rice-serving"
LABELLING_DIR_IN_CONTAINER = "/var/lib/rice-labelling"
SERVING_UID = 10001  # the serving image's user (Dockerfile)
# nginx retitles a worker that got the master's QUIT just before it closes its listening
# sockets; until then an old worker may still accept a new connection with the old routing.
ACCEPTING_WORKER_TITLE = "nginx: worker process"
_HARDENED = {"read_only": True, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
             "restart_policy": {"Name": "unless-stopped"},
             "log_config": {"type": "json-file", "config": {"max-size": "10m",
                                                            "max-file": "3"}}}


def accepting_workers(processes) -> set[int]:
    """The pids of nginx workers that may still accept a connection, from (pid, title) pairs.
    A reload is over for callers when none of the workers from before it is among them."""
    return {pid for pid, title in processes if title.strip() == ACCEPTING_WORKER_TITLE}


class DeployError(RuntimeError):
    """A container did not start or answer; the message holds the reason and its last logs."""


@dataclass(frozen=True)
class Layout:
    """Where the release zone keeps what serves: ports on loopback, host directories."""

    root: Path  # RICE_RELEASE_DIR/serving
    proxy_image: str
    name: str = "rice-serving"  # container names: <name>-proxy, <name>-blue, <name>-green
    proxy_port: int = 8501
    slot_ports: tuple[int, int] = (8502, 8503)
    serving_memory: str = "1g"
    # What one client's requests can make a server hold besides memory: CPU (in cores) and
    # processes (the server needs a few threads; a fork bomb or a thread leak stops here).
    serving_cpus: float = 1.0
    serving_pids: int = 128
    # The group the release worker shares the prediction-log and labelling directories with
    # the servers through (mode 2770, never 0777); None: this process's own group.
    shared_gid: int | None = None
    ready_seconds: float = 60.0
    labelling_rate: float = 0.0  # the share of /predict images kept for labelling
    # "": host networking, everything on 127.0.0.1. Else a Docker network the release worker
    # is on, and the addresses on it of the proxy, then the blue and green servers.
    network: str = ""
    addresses: tuple[str, ...] = ()
    # With `network`: a network only the proxy joins besides it, to publish its port from, so
    # that the serving network can be internal (no way out for a server). "": publish from
    # the serving network.
    door_network: str = ""

    def __post_init__(self) -> None:
        if self.door_network and not self.network:
            raise ValueError(f"the door network {self.door_network!r} "
                             "(RICE_ROLLOUT_DOOR_NETWORK) needs a serving network "
                             "(RICE_ROLLOUT_NETWORK): set both, or neither")
        if self.network and len(self.addresses) != 1 + len(SLOTS):
            raise ValueError(f"the serving network {self.network!r} (RICE_ROLLOUT_NETWORK) "
                             f"needs {1 + len(SLOTS)} addresses on it (RICE_ROLLOUT_ADDRESSES: "
                             f"proxy,{','.join(SLOTS)}), got {list(self.addresses)}: set them, "
                             "or unset RICE_ROLLOUT_NETWORK for host networking")

    def port(self, slot: str) -> int:
        return self.slot_ports[SLOTS.index(slot)]

    def host(self, slot: str) -> str:
        """Where the release worker reaches the server in `slot`."""
        return self.addresses[1 + SLOTS.index(slot)] if self.network else "127.0.0.1"

    def url(self, slot: str) -> str:
        return f"http://{self.host(slot)}:{self.port(slot)}"

    @property
    def proxy_host(self) -> str:
        """Where the release worker reaches the proxy (users: 127.0.0.1:proxy_port)."""
        return self.addresses[0] if self.network else "127.0.0.1"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.proxy_host}:{self.proxy_port}"

    @property
    def listen_host(self) -> str:
        """What the servers and the proxy listen on: loopback on the host's network; every
        address of their own namespace (only the serving network) otherwise."""
        return "0.0.0.0" if self.network else "127.0.0.1"  # noqa: S104 (own namespace)

    def upstream_hosts(self) -> dict[int, str]:
        return {self.port(slot): self.host(slot) for slot in SLOTS}

    def networking(self, client, slot: str) -> dict:
        """The container's network arguments for `slot` ("proxy" or a serving slot)."""
        if not self.network:
            return {"network_mode": "host"}
        door = slot == "proxy" and self.door_network
        address = self.proxy_host if slot == "proxy" else self.host(slot)
        endpoint = client.api.create_endpoint_config(ipv4_address=address)
        arguments = ({"network": self.door_network} if door else
                     {"network": self.network, "networking_config": {self.network: endpoint}})
        if slot == "proxy":  # the one door: the host's loopback, nothing wider
            arguments["ports"] = {f"{self.proxy_port}/tcp": ("127.0.0.1", self.proxy_port)}
        return arguments

    def container(self, slot: str) -> str:
        return f"{self.name}-{slot}"

    @property
    def proxy_name(self) -> str:
        return f"{self.name}-proxy"

    def log_dir(self, slot: str) -> Path:
        return self.root / "predictions" / slot

    @property
    def labelling_dir(self) -> Path:
        return self.root / "labelling"

    @property
    def proxy_conf_dir(self) -> Path:
        return self.root / "proxy"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"


class Engine:
    def __init__(self, socket_path: str, layout: Layout):
        import docker

        self.client = docker.DockerClient(base_url=f"unix://{socket_path}", timeout=120)
        self.layout = layout

    def close(self) -> None:
        self.client.close()

    # --- serving containers -------------------------------------------------------------------

    def start_server(self, slot: str, reference: str, registry_auth: dict | None,
                     fresh_log: bool = True) -> None:
        """Replace whatever runs in `slot` with `reference`; return once it answers /ping.
        A new candidate starts a new prediction log (the shadow stage joins on it); a stable
        server started again after a crash keeps its own."""
        import docker.errors

        layout = self.layout
        self.stop_server(slot)
        self._ensure_image(reference, registry_auth)
        logs = layout.log_dir(slot)
        logs.mkdir(parents=True, exist_ok=True)
        for old in logs.glob("predictions.jsonl*") if fresh_log else ():
            old.unlink()
        environment = {"RICE_HOST": layout.listen_host, "RICE_PORT": str(layout.port(slot)),
                       "RICE_SERVING_PREDICTION_LOG_DIR": LOG_DIR_IN_CONTAINER}
        volumes = {str(logs): {"bind": LOG_DIR_IN_CONTAINER, "mode": "rw"}}
        writable = [logs]
        if layout.labelling_rate > 0:
            layout.labelling_dir.mkdir(parents=True, exist_ok=True)
            writable.append(layout.labelling_dir)
            environment |= {"RICE_SERVING_LABELLING_DIR": LABELLING_DIR_IN_CONTAINER,
                            "RICE_SERVING_LABELLING_SAMPLE_RATE": str(layout.labelling_rate)}
            volumes[str(layout.labelling_dir)] = {"bind": LABELLING_DIR_IN_CONTAINER,
                                                  "mode": "rw"}
        # The server runs as the image's user and writes here. As root, the directories are
        # its own; otherwise they are shared through a group the server is given, never with
        # every user of the host (0777).
        gid = self.layout.shared_gid if self.layout.shared_gid is not None else os.getgid()
        for directory in writable:
            if os.geteuid() == 0:
                os.chown(directory, SERVING_UID, SERVING_UID)
            else:
                os.chown(directory, -1, gid)
                directory.chmod(0o2770)
        try:
            self.client.containers.run(
                reference, name=layout.container(slot), detach=True,
                labels={LABEL: layout.name, f"{LABEL}.slot": slot,
                        f"{LABEL}.reference": reference},
                environment=environment, volumes=volumes,
                tmpfs={"/tmp": "size=64m"}, mem_limit=layout.serving_memory,
                nano_cpus=int(layout.serving_cpus * 1e9), pids_limit=layout.serving_pids,
                group_add=[] if os.geteuid() == 0 else [str(gid)],
                **layout.networking(self.client, slot), **_HARDENED)
        except docker.errors.APIError as exc:
            raise DeployError(f"{reference} did not start in slot {slot}: "
                              f"{exc.explanation or exc}") from None
        self._wait_ready(f"{layout.url(slot)}/ping", layout.container(slot))

    def stop_server(self, slot: str) -> None:
        self._remove(self.layout.container(slot))

    def kill_server(self, slot: str) -> None:
        """For the chaos tests and the benchmark: the candidate dies without a goodbye."""
        self.client.containers.get(self.layout.container(slot)).kill()

    def running_reference(self, slot: str) -> str | None:
        import docker.errors

        try:
            container = self.client.containers.get(self.layout.container(slot))
        except docker.errors.NotFound:
            return None
        if container.status != "running":
            return None
        return container.labels.get(f"{LABEL}.reference")

    def _ensure_image(self, reference: str, registry_auth: dict | None) -> None:
        import docker.errors

        try:
            self.client.images.get(reference)
            return
        except docker.errors.ImageNotFound:
            pass
        repository, digest = reference.rsplit("@", 1)
        try:
            self.client.images.pull(repository, tag=digest, auth_config=registry_auth)
        except docker.errors.APIError as exc:
            raise DeployError(f"{reference} could not be pulled: "
                              f"{exc.explanation or exc}") from None

    # --- the proxy ----------------------------------------------------------------------------

    def ensure_proxy(self) -> None:
        """Start the proxy on the configuration in place, unless it runs already."""
        import docker.errors

        name = self.layout.proxy_name
        try:
            container = self.client.containers.get(name)
            if container.status == "running":
                return
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        layout = self.layout
        try:
            proxy = self.client.containers.create(
                layout.proxy_image, name=name,
                labels={LABEL: layout.name, f"{LABEL}.slot": "proxy"},
                command=["nginx", "-c", f"{PROXY_CONF_DIR}/nginx.conf", "-g", "daemon off;"],
                volumes={str(layout.proxy_conf_dir): {"bind": PROXY_CONF_DIR, "mode": "ro"}},
                # nginx runs as nobody: its pid, temp files and the log it opens before it
                # reads the configuration live in tmpfs it may write.
                tmpfs={PROXY_RUN_DIR: "size=64m,mode=1777", "/var/lib/nginx": "size=16m,mode=1777",
                       "/var/log/nginx": "size=1m,mode=1777"},
                user="65534:65534", mem_limit="256m", nano_cpus=int(0.5e9), pids_limit=64,
                **layout.networking(self.client, "proxy"), **_HARDENED)
            if layout.door_network:  # published from the door, serving on the inside
                self.client.networks.get(layout.network).connect(
                    proxy, ipv4_address=layout.proxy_host)
            proxy.start()
        except docker.errors.APIError as exc:
            raise DeployError(f"the serving proxy did not start: {exc.explanation or exc}"
                              ) from None
        self._wait_ready(f"{layout.proxy_url}/ping", name)

    def reload_proxy(self) -> None:
        """Check the new configuration with `nginx -t`, then SIGHUP: new workers take it, the
        old ones finish what they hold. A configuration nginx refuses is never signalled."""
        container = self.client.containers.get(self.layout.proxy_name)
        code, output = container.exec_run(["nginx", "-t", "-c", f"{PROXY_CONF_DIR}/nginx.conf"])
        if code != 0:
            raise DeployError("nginx refused the new configuration; the proxy keeps the old "
                              f"one: {output.decode(errors='replace')[-500:]}")
        old_workers = accepting_workers(self._proxy_processes(container))
        container.kill(signal="SIGHUP")
        deadline = time.monotonic() + 15
        while accepting_workers(self._proxy_processes(container)) & old_workers:
            if time.monotonic() > deadline:
                raise DeployError("the proxy's old workers still accept connections 15 s "
                                  "after the reload")
            time.sleep(0.05)

    def stop_all(self) -> None:
        """Every container of this layout's name (tests and teardown)."""
        for container in self.client.containers.list(
                all=True, filters={"label": f"{LABEL}={self.layout.name}"}):
            container.remove(force=True)

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _proxy_processes(container) -> list[tuple[int, str]]:
        top = container.top()
        pid, cmd = top["Titles"].index("PID"), top["Titles"].index("CMD")
        return [(int(row[pid]), row[cmd]) for row in top["Processes"]]

    def _remove(self, name: str) -> None:
        import docker.errors

        try:
            container = self.client.containers.get(name)
        except docker.errors.NotFound:
            return
        # SIGTERM first: the server lets requests in flight finish (RICE_SERVING_GRACEFUL_...).
        with contextlib.suppress(docker.errors.APIError):
            container.stop(timeout=10)
        container.remove(force=True)

    def _wait_ready(self, url: str, name: str) -> None:
        import docker.errors

        deadline = time.monotonic() + self.layout.ready_seconds
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                container = self.client.containers.get(name)
            except docker.errors.NotFound:
                raise DeployError(f"{name} is gone") from None
            if container.status in ("exited", "dead", "restarting") or \
                    container.attrs.get("RestartCount"):
                tail = container.logs(tail=20).decode(errors="replace")
                raise DeployError(f"{name} exited ({container.attrs['State'].get('ExitCode')})"
                                  f" before answering {url}:\n{tail}")
            time.sleep(0.25)
        tail = self.client.containers.get(name).logs(tail=20).decode(errors="replace")
        raise DeployError(f"{name} did not answer {url} within {self.layout.ready_seconds:.0f}"
                          f" s:\n{tail}")
