"""Fixtures shared by every test folder: real rice images, a real MLflow server, the Docker
engine and the one compose stack of a session; the hooks that order and time the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers.compose_lifecycle import build_images, compose_stack
from tests.helpers.datasets import REAL_DATA, SMALL_SUBSET, copy_subset
from tests.helpers.loaded_run import LoadedRun, push_under_load
from tests.helpers.mlflow_server import MlflowServer
from tests.helpers.paths import REPO
from tests.helpers.ports import free_port
from tests.helpers.script_env import docker_engine_env
from tests.helpers.shared_stack import AIRFLOW_SERVICES, COMPOSE_TEST_ENV, stack_order

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The read-only real images; CI sets RICE_REQUIRE_REAL_DATA so absence is a failure."""
    if not (REAL_DATA / "train").is_dir():
        message = f"real rice images not found at {REAL_DATA} (set RICE_REAL_DATA)"
        if os.environ.get("RICE_REQUIRE_REAL_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return REAL_DATA


@pytest.fixture(scope="session")
def tiny_real_dataset(real_data: Path, tmp_path_factory) -> Path:
    return copy_subset(real_data, tmp_path_factory.mktemp("tiny-rice"),
                       {"train": 40, "val": 8, "test": 8})


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
    return copy_subset(real_data, root, SMALL_SUBSET)


@pytest.fixture(scope="session")
def docker_engine(request):
    """The engine, an htpasswd registry on loopback and the local base and CLI images, from
    the repository's script; what it started is stopped afterwards. When the session will
    bring the compose stack up (at its end), its images start building now, in the
    background: the build waits on the network and the disk as much as on the CPU, so the
    tests before it hide most of its minutes."""
    state = Path(tempfile.mkdtemp(prefix="rice-docker-"))
    env = {**os.environ, "RICE_DOCKER_STATE": str(state), "RICE_REGISTRY_PORT": str(free_port())}
    script = REPO / "scripts" / "docker-engine"
    subprocess.run([script, "start"], env=env, check=True, timeout=900)
    engine = docker_engine_env(env)
    builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compose-images")
    if any(stack_order(item) > 0 for item in request.session.items):
        _COMPOSE_IMAGES.append(builder.submit(build_images, engine))
    try:
        yield engine
    finally:
        builder.shutdown(wait=True, cancel_futures=True)  # never stop the engine mid-build
        _COMPOSE_IMAGES.clear()
        subprocess.run([script, "stop"], env=env, check=False, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


# The background build of the compose images, when docker_engine started one.
_COMPOSE_IMAGES: list[Future] = []


@pytest.fixture(scope="session")
def compose_dataset(real_data, tmp_path_factory):
    """The compose stack's own copy of the small real subset: the chaos suite files newly
    labelled images into it, and no other stack trains on what that changes."""
    root = tmp_path_factory.mktemp("compose-rice")
    root.chmod(0o755)
    return copy_subset(real_data, root, SMALL_SUBSET)


@pytest.fixture(scope="session")
def shared_compose_stack(docker_engine, compose_dataset):
    """The one docker-compose stack of a session (tests/integration/test_compose_stack.py and
    tests/chaos): `train` on a worker "on another machine" (docker-compose.worker.yaml in a
    project and network of its own, reaching the stack only through its published edge),
    the small real subset. The tests that use it run last (see
    pytest_collection_modifyitems), so it is up only then."""
    override = {"services": {name: {"environment": COMPOSE_TEST_ENV}
                             for name in AIRFLOW_SERVICES}}
    # Its failure is raised here, in the tests that need the images, not where it began.
    images = _COMPOSE_IMAGES[0].result() if _COMPOSE_IMAGES else build_images(docker_engine)
    with compose_stack(compose_dataset, images,
                       logs=REPO / "test-artifacts" / "compose-stack.log",
                       # a remote host that listens on the release queue's name too (issue 35)
                       override=override, remote_queue="training,docker",
                       remote_environment=COMPOSE_TEST_ENV,
                       # a volume tests/chaos can fill (mounting one needs root, as CI runs)
                       staging_tmpfs_mb=512 if os.geteuid() == 0 else None,
                       RICE_TRAIN_QUEUE="training", RICE_EPOCHS="15",
                       # half the /predict images wait for labelling (the drift note counts them)
                       RICE_LABELLING_SAMPLE_RATE="0.5",
                       # the subset is small (the default bar is 0.97)
                       RICE_MIN_TEST_ACCURACY="0.8", RICE_MIN_CLASS_RECALL="0.5") as running:
        yield running


@pytest.fixture(scope="session")
def compose_pushed_run(shared_compose_stack) -> LoadedRun:
    """The compose stack's first pipeline run: a signed push of HEAD through its webhook
    proxy, with load held while it trains and its staging volume full after `train`
    (tests/helpers/loaded_run.py). One training serves test_compose_stack_first_run.py and
    tests/chaos/test_run_under_load.py."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip() or "a" * 40
    return push_under_load(shared_compose_stack, commit)


def pytest_collection_modifyitems(session, config, items):
    """The compose stack (2+ GiB, a CPU's worth of idle polling) is brought up once and only
    for the tests that use it: they run at the end of the session, in a stable order."""
    items[:] = sorted(items, key=stack_order)


_DURATIONS: dict[str, float] = {}


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    _DURATIONS[path] = _DURATIONS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """Wall time per test file (setup, call and teardown): where CI's minutes go, in the log
    and in test-artifacts/durations.json."""
    import json

    if not _DURATIONS:
        return
    ranked = sorted(_DURATIONS.items(), key=lambda item: item[1], reverse=True)
    terminalreporter.section("time per test file")
    for path, seconds in ranked[:25]:
        terminalreporter.write_line(f"{seconds:8.1f}s  {path}")
    out = REPO / "test-artifacts" / "durations.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(ranked), indent=1) + "\n")
