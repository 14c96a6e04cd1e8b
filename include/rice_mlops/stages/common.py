"""What several stages read the same way: the run's request, and the checked staged files.

XCom values are data: ids are checked, and paths are derived from settings and checked ids
(`handoffs.Trained`'s methods).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from airflow.sdk.exceptions import AirflowFailException

from rice_mlops.core.handoffs import Admission, Freshness, Gate, Trained
from rice_mlops.core.run_policy import PolicyError, RunRequest, run_request
from rice_mlops.core.settings import PipelineSettings


def checked_request(settings: PipelineSettings, params: Mapping) -> RunRequest:
    """The run's conf through the deployment's policy; a refusal fails the task for good."""
    try:
        return run_request(params, settings)
    except PolicyError as exc:  # a retry cannot make the conf acceptable
        raise AirflowFailException(f"run refused by the deployment's policy: {exc}") from None


def dataset_dir(settings: PipelineSettings, request: RunRequest) -> Path:
    """The run's dataset: the conf's (checked by the policy) or the synthetic one."""
    from rice_mlops.compute.data.synth import ensure_synthetic

    return request.data_dir or ensure_synthetic(settings.synthetic_root)


def staged_dir(settings: PipelineSettings, trained: Trained) -> Path:
    """The run's staged artifacts, checked against their manifest."""
    from rice_mlops.core.staged_artifacts import verify_manifest

    staged = trained.staged_dir(settings)
    verify_manifest(staged)
    return staged


def training_digests(trained: Trained) -> dict[str, str]:
    """The sha256 of each model file as the train task recorded it."""
    from rice_mlops.core.staged_artifacts import ReleaseInputError

    try:
        return trained.digests()
    except ReleaseInputError as exc:
        raise AirflowFailException(str(exc)) from None


def _handoff_types(hint) -> tuple[type, ...]:
    """The hand-off types an annotation admits (None included when it is optional)."""
    from types import NoneType, UnionType
    from typing import Union, get_args, get_origin

    from rice_mlops.core.handoffs import HANDOFFS

    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if not any(option in HANDOFFS for option in options):
        return ()
    return tuple(option for option in options if option in HANDOFFS or option is NoneType)


def handoff_parameters(function) -> dict[str, tuple[type, ...]]:
    """Each parameter of `function` annotated with a hand-off type, and the types it admits."""
    import typing

    return {name: types for name, hint in typing.get_type_hints(function).items()
            if (types := _handoff_types(hint))}


def foreign_handoffs(expected: dict[str, tuple[type, ...]], arguments: Mapping
                     ) -> list[tuple[str, str]]:
    """(name, the types it admits) of each argument that is not the hand-off `expected`
    names for it: a plain value in its place was written by someone else (the REST API
    stores only plain values: it refuses serde's keys)."""
    return [(name, " or ".join("None" if t is type(None) else t.__name__
                               for t in expected[name]))
            for name, value in arguments.items()
            if name in expected and not isinstance(value, expected[name])]


def checked_handoffs(function):
    """Refuse, without retry, an argument that is not the hand-off its annotation names.

    A task's XCom comes back as the type it wrote; a plain value in its place was written by
    someone else, so the stage runs on nothing it did not get from its upstream task.
    """
    import functools
    import inspect

    signature = inspect.signature(function)
    expected: dict[str, tuple[type, ...]] = {}

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not expected:  # resolved on first use: the stage modules are fully imported then
            expected.update(handoff_parameters(function))
        arguments = signature.bind(*args, **kwargs).arguments
        for name, wanted in foreign_handoffs(expected, arguments):
            raise AirflowFailException(
                f"{function.__name__} takes {wanted} as {name}, not a "
                f"{type(arguments[name]).__name__}: that XCom was not written by its task "
                "(changed by hand?); clear the task to write it again")
        return function(*args, **kwargs)

    return wrapper


@checked_handoffs
def proceed(decision: Admission | Freshness | Gate, field: str) -> bool:
    """Whether a stop decision lets the run go on (`field` is its yes/no field)."""
    return getattr(decision, field) is True
