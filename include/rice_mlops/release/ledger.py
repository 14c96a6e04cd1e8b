"""What the release zone wrote down about a DAG run, for its own later tasks.

The release zone's tasks are handed their inputs through XCom, which any task's token can
overwrite: `train`'s `Trained` (whose build context to build, smoke-test, push, sign and serve)
and `quality_gate`'s `Gate` (as which model version). `prepare_image_context`, the first release
task, measures one MLflow run's bytes and builds its context; it writes down which run and
version that was, in the release zone's own directory, and every later release task of the DAG
run refuses to act for another (`check`). Other defences stand behind this one (the build
context must be prepare_image_context's, the digest the local build's, the signature ours):
this one names the substitution before any of them has to catch it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rice_mlops.core.zone_files import TooLarge, read_bounded, write_atomic

MAX_BYTES = 4096


class LedgerMismatch(ValueError):
    """A release task was handed another run than the one the release zone measured."""


def _path(release_root: Path, dag_run_id: str) -> Path:
    name = hashlib.sha256(str(dag_run_id).encode()).hexdigest()[:32]
    return Path(release_root) / "runs" / f"{name}.json"


def record(release_root: Path, dag_run_id: str, *, mlflow_run_id: str,
           model_version: str) -> None:
    write_atomic(_path(release_root, dag_run_id),
                 json.dumps({"dag_run_id": dag_run_id, "mlflow_run_id": mlflow_run_id,
                             "model_version": str(model_version)}))


def check(release_root: Path, dag_run_id: str | None, *, mlflow_run_id: str,
          model_version: str | None = None) -> None:
    """Raises LedgerMismatch unless prepare_image_context measured `mlflow_run_id` (and
    `model_version`, when given) for this DAG run."""
    try:  # TooLarge is a ValueError: not one of ours
        written = json.loads(read_bounded(_path(release_root, str(dag_run_id)), MAX_BYTES)
                             or b"{}")
    except (TooLarge, ValueError):
        written = {}
    if not isinstance(written, dict):
        written = {}
    if written.get("dag_run_id") != dag_run_id:
        raise LedgerMismatch(f"the release zone measured nothing for DAG run {dag_run_id!r}: "
                             "clear prepare_image_context")
    if written.get("mlflow_run_id") != mlflow_run_id:
        raise LedgerMismatch(f"handed MLflow run {mlflow_run_id!r}, but the release zone "
                             f"measured and built run {written.get('mlflow_run_id')!r} for "
                             f"{dag_run_id}: an upstream XCom was rewritten")
    if model_version is not None and written.get("model_version") != str(model_version):
        raise LedgerMismatch(f"handed model v{model_version}, but the release zone built "
                             f"v{written.get('model_version')} for {dag_run_id}: an upstream "
                             "XCom was rewritten")
