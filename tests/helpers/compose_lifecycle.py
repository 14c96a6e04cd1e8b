"""Drive docker-compose.yaml for real on this machine: images from scripts/compose-images,
a generated .env with fresh secrets and free loopback ports, `up`, health, logs and `down`."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.helpers.compose_project import ComposeStack
from tests.helpers.engine_networks import engine_networks, free_subnet
from tests.helpers.paths import REPO
from tests.helpers.pipeline import remove_serving_containers
from tests.helpers.ports import free_port
from tests.helpers.remote_worker import CONTROL_PLANE_HOST, up_remote_worker
from tests.helpers.script_env import docker_engine_env
from tests.helpers.stack_ownership import OWNER_LABEL, owner, owner_labels, reap_abandoned_stacks


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

    from rice_mlops.release.image import download_wheels
    from rice_mlops.release.signing import generate_keypair

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
        "PROMETHEUS_PASSWORD": secrets.token_urlsafe(24),
        # Short canary windows (2 s): a scrape a second, so the rollout waits 2 s past each.
        "PROMETHEUS_SCRAPE_SECONDS": "1",
        "RICE_STAGING_DIR": str(staging),
        "RICE_RELEASE_DIR": str(release),
        "RICE_DATA_DIR": str(data_dir),
        "RICE_SCHEDULE": "none",
        "RICE_BASE_IMAGE": engine["RICE_BASE_IMAGE"],
        "RICE_BUILD_IMAGE": engine["RICE_BUILD_IMAGE"],
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
        "PROMETHEUS_PORT": str(free_port()),
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
