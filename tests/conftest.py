"""Fixtures shared by every test folder: real rice images and a real MLflow server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.datasets import REAL_DATA, copy_subset
from tests.helpers.mlflow_server import MlflowServer
from tests.helpers.paths import REPO

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
