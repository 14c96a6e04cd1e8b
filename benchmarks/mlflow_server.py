"""The repository's MLflow server for a benchmark (the tests' MlflowServer): started, and this
process logged in as the pipeline's user (the server refuses anonymous clients), stopped on
exit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.mlflow_server import MlflowServer


@contextmanager
def mlflow_server(home: Path) -> Iterator[str]:
    server = MlflowServer(home)
    server.start()
    try:
        os.environ.update(server.credentials)
        yield server.url
    finally:
        server.stop()
