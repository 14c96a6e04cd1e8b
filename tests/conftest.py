"""Fixtures shared by every test folder: paths, real rice images, a real MLflow server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
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
