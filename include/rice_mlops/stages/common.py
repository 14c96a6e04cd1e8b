"""What several stages read the same way: the run's request, and the checked staged files.

XCom values are data: ids are checked, and paths are derived from settings and checked ids
(`handoffs.Trained`'s methods).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.handoffs import Trained
from rice_mlops.run_policy import PolicyError, RunRequest, run_request
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


def staged_dir(settings: PipelineSettings, trained: Trained) -> Path:
    """The run's staged artifacts, checked against their manifest."""
    from rice_mlops.artifacts import verify_manifest

    staged = trained.staged_dir(settings)
    verify_manifest(staged)
    return staged


def training_digests(trained: Trained) -> dict[str, str]:
    """The sha256 of each model file as the train task recorded it."""
    from rice_mlops.release import ReleaseInputError

    try:
        return trained.digests()
    except ReleaseInputError as exc:
        raise AirflowFailException(str(exc)) from None
