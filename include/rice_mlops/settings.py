"""The pipeline's settings: every `RICE_*` variable the DAGs and their tasks use, with its default.

Read once, by `PipelineSettings.from_env()` (the DAG files call it at parse time; tasks receive
the values), and no module reads the environment at import. Each variable is described once in
`rice_mlops.settings_catalog`, from which the README's table is generated. These are operator
settings, so they are trusted; a run's conf may only make a run stricter than them (see
`rice_mlops.run_policy`).

Other processes read their own variables, each in one place: the serving image's server
`RICE_SERVING_*`, `RICE_MODEL_DIR`, `RICE_HOST`, `RICE_PORT`, `RICE_LOG_LEVEL` (`serving.settings`)
and `RICE_MODEL_PUBLIC_KEY` (`serving.__main__`); the webhook plugin `GITHUB_WEBHOOK_*`,
`AIRFLOW_WEBHOOK_*`, `RICE_WEBHOOK_DAG_ID`, `AIRFLOW__API__BASE_URL` and
`AIRFLOW__DATABASE__SQL_ALCHEMY_CONN` (`webhook.app`); the API server's auth manager
`RICE_SERVICE_ACCOUNTS` (`accounts`); the `mlflow-users` service `MLFLOW_*` (`mlflow_auth`); the
command line `GITHUB_WEBHOOK_SECRET` (`cli`, `demo`) and `REGISTRY_USERNAME`/`_PASSWORD` (`cli`).
`attestation` reads `RICE_MODEL_DIR` and `RICE_MODEL_PUBLIC_KEY` from an image's configuration, not
from this process's environment. Here, besides `RICE_*`, only the fallbacks `DOCKER_HOST` (for
`RICE_DOCKER_SOCKET`) and `AIRFLOW__API__BASE_URL` (for `RICE_AIRFLOW_URL`) are read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from rice_mlops.vocabulary import MODEL_NAME

DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_SOCKET = "/var/run/docker.sock"


class SettingsError(ValueError):
    """A setting holds a value the pipeline cannot use; the message names the variable."""


def _parsed(env: Mapping[str, str], name: str, default, parse, kind: str):
    """The variable parsed with `parse`, `default` when unset or empty; an unparsable value
    is a SettingsError naming the variable."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {kind}") from None


def _int(env: Mapping[str, str], name: str, default: int, low: int = 0,
         high: int | None = None) -> int:
    value = _parsed(env, name, default, int, "an integer")
    if value < low:
        raise SettingsError(f"{name}={value} must be at least {low}")
    if high is not None and value > high:
        raise SettingsError(f"{name}={value} must be at most {high}")
    return value


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    value = _parsed(env, name, default, float, "a number")
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name}={value} must be between 0 and 1")
    return value


def _number(env: Mapping[str, str], name: str, default: float, low: float = 0.0) -> float:
    value = _parsed(env, name, default, float, "a number")
    if not value >= low:  # also refuses nan
        raise SettingsError(f"{name}={value} must be at least {low}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} must be one of {', '.join(allowed)}")
    return value


def _rollback(env: Mapping[str, str]) -> str:
    value = env.get("RICE_ROLLBACK_TO_VERSION", "").strip()
    if value and not re.fullmatch(r"[1-9][0-9]{0,17}", value):
        raise SettingsError(f"RICE_ROLLBACK_TO_VERSION={value!r} must be a model version "
                            "number (or empty)")
    return value


def _approvers(env: Mapping[str, str]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in env.get("RICE_APPROVERS", "").split(",") if n.strip())
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}", name):
            raise SettingsError(f"RICE_APPROVERS: {name!r} is not an Airflow user id (letters, "
                                "digits, . _ @ -), comma-separated")
    return names


def _schedule(env: Mapping[str, str], name: str, default: str) -> str | None:
    value = env.get(name, default).strip()
    return None if value.lower() in ("", "none") else value


def _confidence(env: Mapping[str, str]) -> float:
    value = _fraction(env, "RICE_GATE_CONFIDENCE", PipelineSettings.gate_confidence)
    if value in (0.0, 1.0):
        raise SettingsError(f"RICE_GATE_CONFIDENCE={value} must lie strictly between 0 and 1")
    return value


def docker_socket_from(env: Mapping[str, str]) -> str:
    """The engine's socket: RICE_DOCKER_SOCKET, else a unix:// DOCKER_HOST (rootless Docker
    and other engines on another socket), else Docker's default."""
    if explicit := env.get("RICE_DOCKER_SOCKET", "").strip():
        return explicit
    host = env.get("DOCKER_HOST", "").strip()
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    if host:
        raise SettingsError(f"DOCKER_HOST={host!r} is not a unix socket: the Docker tasks mount "
                            "the engine's socket; set RICE_DOCKER_SOCKET to it")
    return DEFAULT_SOCKET


@dataclass(frozen=True)
class PipelineSettings:
    schedule: str | None = DEFAULT_SCHEDULE
    staging_root: Path = Path("/tmp/rice-mlops/staging")
    # The release zone's own directory (build contexts, smoke sets, the serving wheel cache):
    # only the Docker worker mounts it; empty: `<staging_root>-release` beside the staging root.
    release_dir: str = ""
    data_dir: str = ""  # empty: the synthetic default under staging_root/datasets
    data_root: Path | None = None  # conf's data_dir must resolve under it (or the default)
    epochs: int = 25
    min_test_accuracy: float = 0.97  # floors: conf may raise the bar, never lower it
    max_regression: float = 0.005
    min_class_recall: float = 0.90  # every class's test recall; a floor like the others
    gate_alpha: float = 0.05  # McNemar's significance level
    gate_confidence: float = 0.95  # of the intervals in the gate's result and model card
    max_image_mb: float = 400.0  # the smoke test's budgets: over either, not shipped
    max_p50_ms: float = 250.0
    # The pipeline's Ed25519 key (PEM): a file on the release worker, never a connection.
    signing_key_file: str = ""
    experiment: str = MODEL_NAME
    github_conn_id: str = "github_default"
    github_repository: str = ""  # where the pull request goes; conf cannot change it
    allowed_source_repositories: frozenset[str] = frozenset()
    pr_base: str = "main"
    pr_branch: str = "model/latest"
    pr_path: str = "MLProject/model_artifact"
    pr_author: str = "rice-mlops-bot"
    pr_email: str = "rice-mlops-bot@users.noreply.github.com"
    registry_conn_id: str = "rice_registry"
    image_name: str = MODEL_NAME
    base_image: str = ""  # empty: the Dockerfile's python:3.11-slim
    docker_cli_image: str = "docker:27-cli"
    docker_socket: str = DEFAULT_SOCKET
    wheelhouse: str = ""  # for workers without package index access
    keep_builds: int = 5
    train_queue: str = ""  # a Celery queue for `train` alone; empty: the default queue
    docker_queue: str = ""  # the Celery queue of the only workers that hold the socket
    retry_delay_seconds: int = 60
    task_timeout_minutes: int = 30
    train_timeout_minutes: int = 180
    # Training yields the CPU to everything else on its host (the API server answering
    # webhooks, the scheduler): a nice level for the `train` task's process, 0 to 19.
    train_nice: int = 10
    dagrun_timeout_minutes: int = 360
    # May `champion` move when no image was pushed? auto: only without a registry connection.
    promote_without_image: str = "auto"
    airflow_api_conn_id: str = "rice_airflow_api"  # run notes, the newer-push check
    airflow_url: str = "http://127.0.0.1:8080"  # the UI people open from a commit status
    notify_emails: tuple[str, ...] = ()  # nothing is sent when empty
    notify_from: str = "rice-mlops@localhost"
    smtp_conn_id: str = "smtp_default"
    redelivery_schedule: str | None = "*/15 * * * *"  # the webhook redelivery DAG
    github_hook_id: str = ""  # empty: the repository webhook whose URL ends /webhooks/github
    require_approval: bool = False  # a person approves every release, not only close calls
    approve_not_significant: bool = True  # ask a person when the lead may be noise
    approval_timeout_minutes: int = 24 * 60
    # Who may answer approve_release (Airflow user ids); empty: anyone allowed to update the
    # run's task instances, which in SimpleAuthManager is every `user` role.
    approvers: tuple[str, ...] = ()
    # promote refuses an image older than the recorded champion unless this names its version
    rollback_to_version: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        env = os.environ if env is None else env
        data_dir = env.get("RICE_DATA_DIR", "").strip()
        data_root = env.get("RICE_DATA_ROOT", "").strip() or data_dir
        repository = env.get("RICE_GITHUB_REPOSITORY", "").strip()
        allowed = {r.strip() for r in env.get("RICE_ALLOWED_SOURCE_REPOSITORIES", "").split(",")}
        return cls(
            schedule=_schedule(env, "RICE_SCHEDULE", DEFAULT_SCHEDULE),
            staging_root=Path(env.get("RICE_STAGING_DIR", "").strip() or cls.staging_root),
            release_dir=env.get("RICE_RELEASE_DIR", "").strip(),
            data_dir=data_dir,
            data_root=Path(data_root) if data_root else None,
            epochs=_int(env, "RICE_EPOCHS", cls.epochs, low=1),
            min_test_accuracy=_fraction(env, "RICE_MIN_TEST_ACCURACY", cls.min_test_accuracy),
            max_regression=_fraction(env, "RICE_MAX_REGRESSION", cls.max_regression),
            min_class_recall=_fraction(env, "RICE_MIN_CLASS_RECALL", cls.min_class_recall),
            gate_alpha=_fraction(env, "RICE_GATE_ALPHA", cls.gate_alpha),
            gate_confidence=_confidence(env),
            max_image_mb=_number(env, "RICE_MAX_IMAGE_MB", cls.max_image_mb, low=1.0),
            max_p50_ms=_number(env, "RICE_MAX_P50_MS", cls.max_p50_ms, low=0.1),
            signing_key_file=env.get("RICE_SIGNING_KEY_FILE", "").strip(),
            experiment=env.get("RICE_MLFLOW_EXPERIMENT", "").strip() or cls.experiment,
            github_conn_id=env.get("RICE_GITHUB_CONN_ID", "").strip() or cls.github_conn_id,
            github_repository=repository,
            allowed_source_repositories=frozenset(r for r in allowed | {repository} if r),
            pr_base=env.get("RICE_PR_BASE", "").strip() or cls.pr_base,
            pr_branch=env.get("RICE_PR_BRANCH", "").strip() or cls.pr_branch,
            pr_path=env.get("RICE_PR_PATH", "").strip() or cls.pr_path,
            pr_author=env.get("RICE_PR_AUTHOR", "").strip() or cls.pr_author,
            pr_email=env.get("RICE_PR_EMAIL", "").strip() or cls.pr_email,
            registry_conn_id=env.get("RICE_REGISTRY_CONN_ID", "").strip() or cls.registry_conn_id,
            image_name=env.get("RICE_IMAGE_NAME", "").strip() or cls.image_name,
            base_image=env.get("RICE_BASE_IMAGE", "").strip(),
            docker_cli_image=env.get("RICE_DOCKER_CLI_IMAGE", "").strip() or cls.docker_cli_image,
            docker_socket=docker_socket_from(env),
            wheelhouse=env.get("RICE_SERVING_WHEELHOUSE", "").strip(),
            keep_builds=_int(env, "RICE_KEEP_BUILDS", cls.keep_builds),
            train_queue=env.get("RICE_TRAIN_QUEUE", "").strip(),
            docker_queue=env.get("RICE_DOCKER_QUEUE", "").strip(),
            retry_delay_seconds=_int(env, "RICE_RETRY_DELAY_SECONDS", cls.retry_delay_seconds),
            task_timeout_minutes=_int(env, "RICE_TASK_TIMEOUT_MINUTES",
                                      cls.task_timeout_minutes, low=1),
            train_timeout_minutes=_int(env, "RICE_TRAIN_TIMEOUT_MINUTES",
                                       cls.train_timeout_minutes, low=1),
            train_nice=_int(env, "RICE_TRAIN_NICE", cls.train_nice, high=19),
            dagrun_timeout_minutes=_int(env, "RICE_DAGRUN_TIMEOUT_MINUTES",
                                        cls.dagrun_timeout_minutes, low=1),
            promote_without_image=_choice(env, "RICE_PROMOTE_WITHOUT_IMAGE", "auto",
                                          ("auto", "true", "false")),
            airflow_api_conn_id=(env.get("RICE_AIRFLOW_API_CONN_ID", "").strip()
                                 or cls.airflow_api_conn_id),
            airflow_url=(env.get("RICE_AIRFLOW_URL", "").strip()
                         or env.get("AIRFLOW__API__BASE_URL", "").strip()
                         or cls.airflow_url).rstrip("/"),
            notify_emails=tuple(e.strip() for e in env.get("RICE_NOTIFY_EMAILS", "").split(",")
                                if e.strip()),
            notify_from=env.get("RICE_NOTIFY_FROM", "").strip() or cls.notify_from,
            smtp_conn_id=env.get("RICE_SMTP_CONN_ID", "").strip() or cls.smtp_conn_id,
            redelivery_schedule=_schedule(env, "RICE_REDELIVERY_SCHEDULE", "*/15 * * * *"),
            github_hook_id=env.get("RICE_GITHUB_HOOK_ID", "").strip(),
            require_approval=_choice(env, "RICE_REQUIRE_APPROVAL", "false",
                                     ("true", "false")) == "true",
            approve_not_significant=_choice(env, "RICE_APPROVE_NOT_SIGNIFICANT", "true",
                                            ("true", "false")) == "true",
            approval_timeout_minutes=_int(env, "RICE_APPROVAL_TIMEOUT_MINUTES",
                                          cls.approval_timeout_minutes, low=1),
            rollback_to_version=_rollback(env),
            approvers=_approvers(env),
        )

    def as_dict(self) -> dict:
        """Plain values (for logs and tests); the settings hold no secret."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: (sorted(v) if isinstance(v, frozenset) else
                    str(v) if isinstance(v, Path) else v) for k, v in values.items()}

    @property
    def release_root(self) -> Path:
        """Where the release zone writes what it builds from; no other zone may write here."""
        if self.release_dir:
            return Path(self.release_dir)
        return self.staging_root.with_name(f"{self.staging_root.name}-release")

    @property
    def synthetic_root(self) -> Path:
        return self.staging_root / "datasets"

    def queue(self, which: str) -> dict[str, str]:
        """Operator kwargs routing a task to its queue (`train` or `docker`), when one is set."""
        name = {"train": self.train_queue, "docker": self.docker_queue}[which]
        return {"queue": name} if name else {}
