"""What a run's conf may ask for: a stricter run, never a looser one.

The deployment's settings are floors. Airflow refuses a conf that breaks the Param schemas
built here with 400 at trigger time; what a schema cannot express (where a path resolves to,
symlinks included) is checked by `run_request`, which every task that uses conf goes through,
before anything is written to MLflow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rice_mlops.core.settings import PipelineSettings

SHA_OR_EMPTY = r"^([0-9a-f]{7,40})?$"
REPOSITORY = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
RUN_ID = re.compile(r"[0-9a-f]{32}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # an OCI content digest, as the registry names it


class PolicyError(ValueError):
    """The run asks for something the deployment does not allow; nothing was done."""


def allowed_repositories(settings: PipelineSettings) -> list[str]:
    """Source repositories a run may name: RICE_ALLOWED_SOURCE_REPOSITORIES and the pull
    request's repository. Empty: none configured, any well-formed name (it names the source
    in tags and the pull request body; it never chooses where the pull request goes)."""
    return sorted(settings.allowed_source_repositories)


def param_schemas(settings: PipelineSettings) -> dict:
    """JSON-schema keywords per param, derived from the settings (the DAG wraps them in Param).

    The bars are bounded by the deployment's own: a conf below `min_test_accuracy` or above
    `max_regression` is refused by Airflow with 400 before a run exists.
    """
    repositories = allowed_repositories(settings)
    repository = ({"enum": ["", *repositories]} if repositories
                  else {"pattern": f"^$|{REPOSITORY}"})
    return {
        "epochs": {"default": settings.epochs, "type": "integer", "minimum": 1,
                   "maximum": 200, "description": "Training epochs."},
        "image_size": {"default": 64, "type": "integer", "minimum": 32, "maximum": 256,
                       "description": "Side in pixels the model resizes its input to."},
        "batch_size": {"default": 64, "type": "integer", "minimum": 8, "maximum": 512},
        "data_dir": {"default": settings.data_dir, "type": "string", "maxLength": 4096,
                     "description": "Dataset directory under the deployment's data root; "
                                    "empty for the configured default."},
        "min_test_accuracy": {
            "default": settings.min_test_accuracy, "type": "number",
            "minimum": settings.min_test_accuracy, "maximum": 1,
            "description": "The gate's bar on test accuracy; at least the deployment's "
                           f"{settings.min_test_accuracy}."},
        "max_regression": {
            "default": settings.max_regression, "type": "number", "minimum": 0,
            "maximum": settings.max_regression,
            "description": "How much worse than the champion is tolerated; at most the "
                           f"deployment's {settings.max_regression}."},
        "source_commit": {"default": "", "type": "string", "pattern": SHA_OR_EMPTY,
                          "description": "Commit sha from the webhook (hex, 7-40 chars)."},
        "source_ref": {"default": "", "type": "string", "maxLength": 255},
        "source_repository": {"default": "", "type": "string", **repository,
                              "description": "owner/name pushed to; must be allowed."},
        "pusher": {"default": "", "type": "string", "maxLength": 255,
                   "description": "Who pushed (named in the pull request)."},
        "require_approval": {
            "default": settings.require_approval, "type": "boolean",
            **({"enum": [True]} if settings.require_approval else {}),
            "description": "A person approves the release before it is published (the "
                           "deployment's RICE_REQUIRE_APPROVAL cannot be turned off here)."},
        "force": {"default": False, "type": "boolean",
                  "description": "Retrain even when data and training code equal the "
                                 "champion's."},
        "compare_url": {"default": "", "type": "string", "maxLength": 2048,
                        "pattern": r"^$|^https://[^\s()<>\[\]]+$",
                        "description": "GitHub's compare link (named in the pull request)."},
    }


@dataclass(frozen=True)
class RunRequest:
    """A run's conf after the policy: only values the deployment allows."""

    data_dir: Path | None  # None: the synthetic default
    epochs: int
    image_size: int
    batch_size: int
    min_test_accuracy: float
    max_regression: float
    source_commit: str
    source_ref: str
    source_repository: str
    pusher: str
    compare_url: str
    force: bool = False
    require_approval: bool = False

    def source(self) -> dict[str, str]:
        values = {"commit": self.source_commit, "ref": self.source_ref,
                  "repository": self.source_repository}
        return {key: value for key, value in values.items() if value}


def resolve_data_dir(requested: str, settings: PipelineSettings) -> Path | None:
    """The dataset directory, symlinks resolved, inside the data root; None for the default.

    The data root is RICE_DATA_ROOT (or RICE_DATA_DIR when only that is set). A run may
    name a directory under it, never anywhere else on the worker.
    """
    if not requested:
        return None
    path = Path(requested)
    if not path.is_absolute():
        raise PolicyError(f"data_dir {requested!r} must be an absolute path under the data "
                          "root")
    if settings.data_root is None:
        raise PolicyError(f"data_dir {requested!r} is not allowed: this deployment has no "
                          "data root (set RICE_DATA_ROOT, or RICE_DATA_DIR and leave "
                          "data_dir empty)")
    root = settings.data_root.resolve()
    resolved = path.resolve()
    if resolved != root and not resolved.is_relative_to(root):
        raise PolicyError(f"data_dir {requested!r} resolves to {resolved}, outside the data "
                          f"root {root}: name a dataset under it")
    return resolved


def run_request(params: Mapping, settings: PipelineSettings) -> RunRequest:
    """Check a run's params against the policy (Airflow has already checked the schemas;
    this repeats the bounds so a run created before a setting changed is held to it too)."""
    problems = []
    if params["min_test_accuracy"] < settings.min_test_accuracy:
        problems.append(f"min_test_accuracy {params['min_test_accuracy']} is below the "
                        f"deployment's bar {settings.min_test_accuracy}")
    if params["max_regression"] > settings.max_regression:
        problems.append(f"max_regression {params['max_regression']} is above the "
                        f"deployment's {settings.max_regression}")
    repository = params.get("source_repository") or ""
    allowed = allowed_repositories(settings)
    if repository and allowed and repository not in allowed:
        problems.append(f"source_repository {repository!r} is not allowed "
                        f"(allowed: {', '.join(allowed)})")
    if repository and not re.fullmatch(REPOSITORY, repository):
        problems.append(f"source_repository {repository!r} is not owner/name")
    if problems:
        raise PolicyError("; ".join(problems))
    return RunRequest(
        data_dir=resolve_data_dir(params.get("data_dir") or settings.data_dir, settings),
        epochs=int(params["epochs"]), image_size=int(params["image_size"]),
        batch_size=int(params["batch_size"]),
        min_test_accuracy=float(params["min_test_accuracy"]),
        max_regression=float(params["max_regression"]),
        source_commit=params.get("source_commit") or "", source_ref=params.get("source_ref") or "",
        source_repository=repository, pusher=params.get("pusher") or "",
        compare_url=params.get("compare_url") or "", force=bool(params.get("force")),
        require_approval=bool(params.get("require_approval")) or settings.require_approval,
    )


def checked_run_id(value: object) -> str:
    """An MLflow run id read from XCom or MLflow: 32 lowercase hex, or PolicyError."""
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        raise PolicyError(f"{value!r} is not an MLflow run id (32 hex characters)")
    return value


def checked_digest(value: object) -> str:
    """An OCI digest read from XCom or a registry: `sha256:` and 64 lowercase hex, or
    PolicyError."""
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        raise PolicyError(f"{value!r} is not an image digest (sha256: and 64 hex characters)")
    return value


def newer_push(mine: Mapping, runs: Iterable[Mapping]) -> str | None:
    """The commit of a run queued after `mine` for the same repository and branch, if any.

    Pure: `mine` and `runs` are dagRun documents of the REST API.
    """
    conf = mine.get("conf") or {}
    if not conf.get("source_commit"):
        return None  # nightly and hand-made runs are never superseded
    newest = None
    for run in runs:
        other = run.get("conf") or {}
        if run.get("dag_run_id") == mine.get("dag_run_id"):
            continue
        if (other.get("source_repository"), other.get("source_ref")) != (
                conf.get("source_repository"), conf.get("source_ref")):
            continue
        if not other.get("source_commit") or other["source_commit"] == conf["source_commit"]:
            continue
        later = (run.get("run_after") or "") > (mine.get("run_after") or "")
        if later and (newest is None or run["run_after"] > newest["run_after"]):
            newest = run
    return newest["conf"]["source_commit"] if newest else None
