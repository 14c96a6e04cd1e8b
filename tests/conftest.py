"""Fixtures shared by every test folder: paths, real rice images, a real MLflow server, the
Docker engine and the one compose stack of a session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("RICE_REAL_DATA", REPO.parent / "shared" / "rice"))
CLASSES = ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The read-only real images; CI sets RICE_REQUIRE_REAL_DATA so absence is a failure."""
    if not (REAL_DATA / "train").is_dir():
        message = f"real rice images not found at {REAL_DATA} (set RICE_REAL_DATA)"
        if os.environ.get("RICE_REQUIRE_REAL_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return REAL_DATA


def copy_subset(source: Path, target: Path, per_split: dict[str, int]) -> Path:
    """A split-layout copy with the first N images per class of each split (sorted by name)."""
    for split, count in per_split.items():
        for cls in CLASSES:
            out = target / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted((source / split / cls).iterdir())[:count]:
                shutil.copy2(image, out / image.name)
    return target


@pytest.fixture(scope="session")
def tiny_real_dataset(real_data: Path, tmp_path_factory) -> Path:
    return copy_subset(real_data, tmp_path_factory.mktemp("tiny-rice"),
                       {"train": 40, "val": 8, "test": 8})


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
        from tests.integration.conftest import parse_env_lines

        return parse_env_lines(self._script("env"))

    @property
    def admin(self) -> tuple[str, str]:
        return "admin", (self.home / "admin_password").read_text().strip()

    def stop(self) -> None:
        self._script("stop")


@pytest.fixture(scope="session")
def mlflow_control(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, proxied artifacts), stoppable by tests."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    # The tests talk to MLflow as the pipeline does, with the pipeline's own user.
    credentials = server.credentials
    previous = {key: os.environ.get(key) for key in credentials}
    os.environ.update(credentials)
    try:
        yield server
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(mlflow_control) -> str:
    return mlflow_control.url


@pytest.fixture(scope="session")
def small_real_dataset(real_data, tmp_path_factory):
    """100 / 20 / 20 real images per class: enough for a model that classifies well."""
    root = tmp_path_factory.mktemp("small-rice")
    root.chmod(0o755)
    return copy_subset(real_data, root, {"train": 100, "val": 20, "test": 20})


@pytest.fixture(scope="session")
def docker_engine():
    """The engine, an htpasswd registry on loopback and the local base and CLI images, from
    the repository's script; what it started is stopped afterwards."""
    from tests.integration.conftest import docker_engine_env

    state = Path(tempfile.mkdtemp(prefix="rice-docker-"))
    env = {**os.environ, "RICE_DOCKER_STATE": str(state), "RICE_REGISTRY_PORT": str(free_port())}
    script = REPO / "scripts" / "docker-engine"
    subprocess.run([script, "start"], env=env, check=True, timeout=900)
    try:
        yield docker_engine_env(env)
    finally:
        subprocess.run([script, "stop"], env=env, check=False, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


# Environment laid over every Airflow service of the shared compose stack (an override file:
# docker-compose.yaml keeps the deployment's defaults). A killed worker's task is found in a
# minute instead of five; retries come sooner; the chaos runs retrain against the champion
# the first run promoted, and the gate's statistics are tested elsewhere.
COMPOSE_TEST_ENV = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "RICE_RETRY_DELAY_SECONDS": "20",
    "RICE_MAX_REGRESSION": "1.0",
    "RICE_GATE_ALPHA": "0.0",
    "RICE_APPROVE_NOT_SIGNIFICANT": "false",
}
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", "airflow-worker", "airflow-worker-docker",
                    "airflow-worker-training")


@pytest.fixture(scope="session")
def shared_compose_stack(docker_engine, small_real_dataset):
    """The one docker-compose stack of a session (tests/integration/test_compose_stack.py and
    tests/chaos): `train` on the training-queue profile's worker, the small real subset. The
    tests that use it run last (see pytest_collection_modifyitems), so it is up only then."""
    from tests.integration.compose_stack import build_images, compose_stack

    override = {"services": {name: {"environment": COMPOSE_TEST_ENV}
                             for name in AIRFLOW_SERVICES}}
    with compose_stack(small_real_dataset, build_images(),
                       logs=REPO / "test-artifacts" / "compose-stack.log",
                       profiles=("training-queue",), override=override,
                       # a volume tests/chaos can fill (mounting one needs root, as CI runs)
                       staging_tmpfs_mb=512 if os.geteuid() == 0 else None,
                       RICE_TRAIN_QUEUE="training", RICE_EPOCHS="15",
                       # the subset is small (the default bar is 0.97)
                       RICE_MIN_TEST_ACCURACY="0.8", RICE_MIN_CLASS_RECALL="0.5") as running:
        yield running


def _stack_order(item) -> int:
    """0: tests without the compose stack; 1: test_compose_stack.py (a fresh stack's first
    run); 2: the chaos suite, which breaks and restores that same stack."""
    if "shared_compose_stack" not in getattr(item, "fixturenames", ()):
        return 0
    return 2 if Path(str(item.path)).parent.name == "chaos" else 1


def pytest_collection_modifyitems(session, config, items):
    """The compose stack (2+ GiB, a CPU's worth of idle polling) is brought up once and only
    for the tests that use it: they run at the end of the session, in a stable order."""
    items[:] = sorted(items, key=_stack_order)
