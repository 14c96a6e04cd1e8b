"""What several stages read the same way: the run's request, and the paths derived from it.

XCom values are data: ids are checked, and paths are derived from settings and checked ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.run_policy import PolicyError, RunRequest, checked_run_id, run_request
from rice_mlops.settings import PipelineSettings


def checked_request(settings: PipelineSettings, params: Mapping) -> RunRequest:
    """The run's conf through the deployment's policy; a refusal fails the task for good."""
    try:
        return run_request(params, settings)
    except PolicyError as exc:  # a retry cannot make the conf acceptable
        raise AirflowFailException(f"run refused by the deployment's policy: {exc}") from None


def dataset_dir(settings: PipelineSettings, request: RunRequest) -> Path:
    """The run's dataset: the conf's (checked by the policy) or the synthetic one."""
    from rice_mlops.data.synth import ensure_synthetic

    return request.data_dir or ensure_synthetic(settings.synthetic_root)


def staged_dir(settings: PipelineSettings, trained: Mapping) -> Path:
    """The run's staged artifacts, checked against their manifest."""
    from rice_mlops.artifacts import ARTIFACT_DIR, verify_manifest

    staged = settings.staging_root / checked_run_id(trained["run_id"]) / ARTIFACT_DIR
    verify_manifest(staged)
    return staged


def evidence_dir(settings: PipelineSettings, trained: Mapping) -> Path:
    """Where the run's model card is written beside its staged artifacts."""
    return settings.staging_root / checked_run_id(trained["run_id"]) / "evidence"


def training_digests(trained: Mapping) -> dict[str, str]:
    """The sha256 of each model file as the train task recorded it."""
    from rice_mlops.release import ReleaseInputError, recorded_digests

    try:
        return recorded_digests(trained)
    except ReleaseInputError as exc:
        raise AirflowFailException(str(exc)) from None
