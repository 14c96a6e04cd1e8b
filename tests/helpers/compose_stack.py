"""Drive docker-compose.yaml for real on this machine: images from scripts/compose-images,
a generated .env with fresh secrets and free loopback ports, `up`, health, logs and `down`."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.helpers.paths import REPO
from tests.helpers.pipeline import remove_serving_containers
from tests.helpers.ports import free_port
from tests.helpers.script_env import docker_engine_env

ONE_SHOT = ("airflow-init", "registry-init", "mlflow-users")


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


def build_images(engine: dict[str, str] | None = None) -> dict[str, str]:
    """The *_IMAGE lines scripts/compose-images prints after building every image and pinning
    each to its digest in the engine's loopback registry (`docker_engine_env()`), the Docker
    tasks' CLI image included."""
    import os

    engine = engine if engine is not None else docker_engine_env()
    # By name in the environment: the registry password never reaches a command line.
    env = {**os.environ, **{key: engine[key] for key in (
        "RICE_REGISTRY", "RICE_REGISTRY_USER", "RICE_REGISTRY_PASSWORD", "RICE_DOCKER_CLI_IMAGE",
        "RICE_ROLLOUT_PROXY_IMAGE")}}
    built = subprocess.run([REPO / "scripts" / "compose-images", "build"], capture_output=True,
                           text=True, timeout=1800, env=env)
    if built.returncode != 0:
        raise RuntimeError(f"scripts/compose-images build failed: {built.stderr[-3000:]}")
    return dict(line.split("=", 1) for line in built.stdout.split())


def _wait(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@contextmanager
def compose_stack(data_dir: Path, images: dict[str, str], logs: Path | None = None,
                  profiles: tuple[str, ...] = (), override: dict | None = None,
                  staging_tmpfs_mb: int | None = None, remote_queue: str | None = None,
                  remote_environment: dict[str, str] | None = None,
                  **settings: str) -> Iterator[ComposeStack]:
    """The stack up on `data_dir` with generated secrets; `settings` override .env values and
    `override` is a compose file laid over docker-compose.yaml (for example test-only
    environment), the default deployment itself unchanged. `staging_tmpfs_mb` puts the staging
    directory on a tmpfs of that size (root only), a volume a test can fill. `remote_queue`
    adds a worker for that queue as another machine would run it (`up_remote_worker`), with
    `remote_environment` laid over its environment; the stack then publishes its edge.
    Everything it created (containers, volumes, networks, pushed local tags, staging) goes on
    exit."""
    from cryptography.fernet import Fernet

    from rice_mlops.image import download_wheels
    from rice_mlops.signing import generate_keypair

    # Bind sources must be readable by the containers' users: outside pytest's 0700 dirs.
    root = Path(tempfile.mkdtemp(prefix="rice-compose-"))
    root.chmod(0o755)
    staging = root / "staging"
    staging.mkdir()
    if staging_tmpfs_mb:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={staging_tmpfs_mb}m,mode=0777",
                        "rice-staging", str(staging)], check=True, capture_output=True)
    staging.chmod(0o777)  # the workers (uid 50000) write here
    # The release zone's directory: the Docker worker (uid 50000) alone writes it, and no
    # other service mounts it.
    release = root / "release"
    release.mkdir(mode=0o755)
    os.chown(release, 50000, 0)
    # The stack's network has no route out: the workers read the serving wheels from here.
    download_wheels(staging / "wheelhouse")
    # The pipeline's signing key, readable by the Docker worker's user (uid 50000) alone.
    signing_key, _ = generate_keypair(root / "keys")
    os.chown(signing_key, 50000, 0)
    (root / "keys").chmod(0o755)
    engine = docker_engine_env()
    serving_id = uuid.uuid4().hex[:8]
    reaped = reap_abandoned_stacks()  # first: what it frees (subnets too) is this stack's
    if reaped:
        print(f"removed what killed test sessions left on the engine: {reaped}")
    # Not the default 10.85.213.0/24: an engine may hold another stack's serving network (a
    # live one's, or another host's), and two pools may not overlap.
    serving_subnet = free_subnet(85)
    env = {
        **images,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "AIRFLOW_DB_PASSWORD": secrets.token_urlsafe(24),
        "MLFLOW_DB_PASSWORD": secrets.token_urlsafe(24),
        "REDIS_PASSWORD": secrets.token_urlsafe(24),
        "RELEASE_REDIS_PASSWORD": secrets.token_urlsafe(24),
        "MLFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "MLFLOW_PIPELINE_USERNAME": "rice-pipeline",
        "MLFLOW_PIPELINE_PASSWORD": secrets.token_urlsafe(24),
        "MLFLOW_FLASK_SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(16),
        "AIRFLOW_WEBHOOK_PASSWORD": secrets.token_urlsafe(16),
        "AIRFLOW_PIPELINE_PASSWORD": secrets.token_urlsafe(16),
        "AIRFLOW_RELEASE_PASSWORD": secrets.token_urlsafe(16),
        "RICE_SIGNING_KEY_HOST_FILE": str(signing_key),
        "GITHUB_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        "GITHUB_WEBHOOK_REPOSITORIES": "local/rice-mlops",
        "GITHUB_TOKEN": "",
        "REGISTRY_USER": "rice",
        "REGISTRY_PASSWORD": secrets.token_urlsafe(16),
        "RICE_STAGING_DIR": str(staging),
        "RICE_RELEASE_DIR": str(release),
        "RICE_DATA_DIR": str(data_dir),
        "RICE_SCHEDULE": "none",
        "RICE_BASE_IMAGE": engine["RICE_BASE_IMAGE"],
        # The digest-pinned one from `images` when given (build_images pins it).
        "RICE_DOCKER_CLI_IMAGE": images.get("RICE_DOCKER_CLI_IMAGE",
                                            engine["RICE_DOCKER_CLI_IMAGE"]),
        "RICE_SERVING_WHEELHOUSE": str(staging / "wheelhouse"),
        "RICE_ROLLOUT_PROXY_IMAGE": images.get("RICE_ROLLOUT_PROXY_IMAGE",
                                               engine["RICE_ROLLOUT_PROXY_IMAGE"]),
        # This stack's serving: its own names, network and port, beside any other on the
        # engine (the demo's, the embedded stack's); short canary windows.
        "RICE_ROLLOUT_NAME": f"rice-ci-{serving_id}",
        "RICE_SERVING_NETWORK": f"rice-ci-serving-{serving_id}",
        "RICE_SERVING_DOOR_NETWORK": f"rice-ci-serving-door-{serving_id}",
        "RICE_SERVING_SUBNET": str(serving_subnet),
        "RICE_SERVING_ADDRESSES": ",".join(str(serving_subnet[i]) for i in (10, 11, 12)),
        "RICE_SERVING_PORT": str(free_port()),
        "RICE_ROLLOUT_WINDOW_SECONDS": "2",
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "AIRFLOW_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "REGISTRY_PORT": str(free_port()),
        "WEBHOOK_PORT": str(free_port()),
        **settings,
    }
    network = None
    if remote_queue:
        network = f"rice-ci-remote-{serving_id}"
        env.update(_publish_for_remote(root, network))
        profiles = (*profiles, "publish")
    env_file = root / ".env"
    env_file.touch(mode=0o600)  # live secrets
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    owned = root / "owner.yaml"
    owned.write_text(json.dumps(owner_labels(REPO / "docker-compose.yaml")))
    command = ["docker-compose", "-p", f"rice-ci-{uuid.uuid4().hex[:8]}", "--env-file",
               str(env_file), "-f", str(REPO / "docker-compose.yaml"), "-f", str(owned)]
    if override:
        override_file = root / "override.yaml"
        override_file.write_text(json.dumps(override, indent=2))  # JSON is YAML
        command += ["-f", str(override_file)]
    for profile in profiles:
        command += ["--profile", profile]
    stack = ComposeStack(command, env)
    try:
        up = stack.compose("up", "-d", "--no-build", timeout=900)
        if up.returncode != 0:
            try:
                networks = engine_networks()
            except (subprocess.CalledProcessError, ValueError) as exc:  # the engine is gone
                networks = f"unknown ({exc})"
            raise RuntimeError(f"docker-compose up failed: {up.stderr[-3000:]}\n"
                               f"the engine's networks then: {networks}")
        _wait(f"{stack.airflow}/api/v2/monitor/health", 300)
        if remote_queue:
            stack.remote = up_remote_worker(stack, "remote", {"RICE_WORKER_QUEUE": remote_queue},
                                            environment=remote_environment)
        yield stack
    finally:
        if logs is not None:
            logs.parent.mkdir(parents=True, exist_ok=True)
            out = stack.compose("logs", "--no-color", timeout=120)
            remote = stack.remote.compose("logs", "--no-color", timeout=120) \
                if stack.remote else None
            logs.write_text(out.stdout + out.stderr + (
                "\n--- the remote worker (docker-compose.worker.yaml) ---\n"
                + remote.stdout + remote.stderr if remote else ""))
        if stack.remote:
            stack.remote.compose("down", "--volumes", timeout=300)
        # The serving containers are the release worker's, not compose's: they go first, or
        # their network could not.
        remove_serving_containers(env["RICE_ROLLOUT_NAME"])
        stack.compose("down", "--volumes", "--remove-orphans", timeout=300)
        pushed = subprocess.run(["docker", "images", "-q", f"{stack.registry}/rice-classifier"],
                                capture_output=True, text=True).stdout.split()
        if pushed:
            subprocess.run(["docker", "rmi", "-f", *set(pushed)], capture_output=True)
        if staging_tmpfs_mb:
            subprocess.run(["umount", str(staging)], capture_output=True)
        if network:
            subprocess.run(["docker", "network", "rm", network], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


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


def engine_networks() -> dict[str, list[str]]:
    """Every network on the engine with its IPv4 subnets."""
    ids = subprocess.run(["docker", "network", "ls", "-q"], capture_output=True, text=True,
                         check=True).stdout.split()
    inspected = json.loads(subprocess.run(["docker", "network", "inspect", *ids],
                                          capture_output=True, text=True, check=True).stdout)
    return {network["Name"]: [config["Subnet"] for config in
                              (network.get("IPAM") or {}).get("Config") or []
                              if ":" not in config.get("Subnet", ":")]
            for network in inspected}


def free_subnet(second_octet: int) -> ipaddress.IPv4Network:
    """A 10.<second_octet>.x.0/24 that overlaps no network on the engine, chosen at random so
    that two stacks on one engine seldom race for the same one."""
    networks = engine_networks()
    taken = [ipaddress.ip_network(subnet, strict=False)
             for subnets in networks.values() for subnet in subnets]
    for _ in range(50):
        candidate = ipaddress.ip_network(f"10.{second_octet}.{20 + secrets.randbelow(200)}.0/24")
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise RuntimeError(f"no free 10.{second_octet}.x.0/24 on the engine: {networks}")


REMOTE_SERVICE = "airflow-worker-remote"
CONTROL_PLANE_HOST = "rice-control-plane"
WORKER_ENV_EXAMPLE = REPO / "worker.env.example"


def _publish_for_remote(root: Path, network: str) -> dict[str, str]:
    """A network of the remote worker's own, as another host's LAN: the stack publishes its
    edge on this host's address there (the bridge's gateway), and nothing else of the stack
    is reachable from it but what that address publishes. The edge's certificate names it."""
    for _ in range(20):
        subnet = free_subnet(86)
        gateway = str(subnet[1])
        made = subprocess.run(["docker", "network", "create", "--subnet", str(subnet),
                               "--gateway", gateway, "--label", f"{OWNER_LABEL}={owner()}",
                               network], capture_output=True, text=True)
        if made.returncode == 0:
            break
    else:
        raise RuntimeError(f"no free 10.86.x.0/24 for the remote network: {made.stderr}")
    tls = root / "tls"
    subprocess.run([REPO / "scripts" / "tls", tls, CONTROL_PLANE_HOST, gateway], check=True,
                   capture_output=True)
    return {"RICE_PUBLISH_ADDRESS": gateway, "RICE_TLS_DIR": str(tls),
            "RICE_EDGE_PORT": str(free_port()), "RICE_BROKER_PORT": str(free_port()),
            "RICE_CI_REMOTE_NETWORK": network}


def up_remote_worker(stack: ComposeStack, name: str, settings: dict[str, str] | None = None,
                     environment: dict[str, str] | None = None, wait: bool = True
                     ) -> ComposeStack:
    """docker-compose.worker.yaml in a project of its own on the stack's remote network, with
    the worker.env a person would write from the control plane's .env (README "Add a
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


# Environment laid over every Airflow service of the shared compose stack (an override file:
# docker-compose.yaml keeps the deployment's defaults). A killed worker's task is found in a
# minute instead of five; retries come sooner; the chaos runs retrain against the champion
# the first run promoted, and the gate's statistics and the rollout's budgets are tested
# elsewhere.
COMPOSE_TEST_ENV = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    # Short, so the chaos run's retries (a killed `train`, a push to a stopped registry) come
    # soon; the registry is given back within a few seconds of the push's first failure.
    "RICE_RETRY_DELAY_SECONDS": "10",
    "RICE_MAX_REGRESSION": "1.0",
    "RICE_GATE_ALPHA": "0.0",
    "RICE_APPROVE_NOT_SIGNIFICANT": "false",
    # The chaos runs' challengers roll out against the first run's model on a loaded CI:
    # the rollout's own decisions are tested on the embedded stack (test_rollout_e2e.py).
    "RICE_ROLLOUT_MIN_AGREEMENT": "0",
    "RICE_ROLLOUT_MAX_P99_MS": "5000",
    # The monitoring runs when test_compose_stack_monitoring.py triggers it, on a window it
    # fills; its drift starts a training run (no cron here: drift alone schedules the DAG).
    "RICE_MONITORING_SCHEDULE": "none",
    "RICE_MONITORING_MIN_PREDICTIONS": "60",
}
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-worker-docker",
                    "airflow-worker-training")


def stack_order(item) -> int:
    """0: tests without the compose stack; 1: test_compose_stack.py (a fresh stack's first
    run); 2: the chaos suite, which breaks and restores that same stack."""
    if "shared_compose_stack" not in getattr(item, "fixturenames", ()):
        return 0
    return 2 if Path(str(item.path)).parent.name == "chaos" else 1
