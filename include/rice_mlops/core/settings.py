"""The pipeline's settings: every variable the DAGs and their tasks use, with its default.

Read once, by `PipelineSettings.from_env()` (the DAG files call it at parse time; tasks receive
the values), with the package's one set of readers and its one error type
(`rice_mlops.core.readers`); no module reads the environment at import. Each variable is
described once in `rice_mlops.operations.settings_catalog`, from which docs/configuration.md's
table is generated. These are operator settings, so they are trusted; a run's conf may only
make a run stricter than them (see `rice_mlops.core.run_policy`).

Not every `RICE_*` variable is the pipeline's: the webhook (`rice_mlops.ingress.settings`,
which also reads `RICE_WEBHOOK_DAG_ID`), the command line and the service helpers
(`rice_mlops.operations.tool_settings`: `RICE_SERVICE_ACCOUNTS` and others) read theirs with the
same readers and are catalogued beside these. The serving image's server reads `RICE_SERVING_*`,
`RICE_MODEL_DIR`, `RICE_MODEL_PUBLIC_KEY`, `RICE_HOST`, `RICE_PORT` and `RICE_LOG_LEVEL` with its
own parser (`rice_mlops.serving.settings`), because it ships alone in the image. Here, besides
`RICE_*`, only the fallbacks `DOCKER_HOST` (for `RICE_DOCKER_SOCKET`) and
`AIRFLOW__API__BASE_URL` (for `RICE_AIRFLOW_URL`) are read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from rice_mlops.core import readers as read
from rice_mlops.core.readers import SettingsError
from rice_mlops.core.vocabulary import MODEL_NAME

__all__ = ["DEFAULT_SCHEDULE", "DEFAULT_SOCKET", "PipelineSettings", "SettingsError",
           "docker_socket_from"]

DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_SOCKET = "/var/run/docker.sock"


def _rollback(env: Mapping[str, str]) -> str:
    value = read.text(env, "RICE_ROLLBACK_TO_VERSION")
    if value and not re.fullmatch(r"[1-9][0-9]{0,17}", value):
        raise SettingsError("RICE_ROLLBACK_TO_VERSION",
                            f"RICE_ROLLBACK_TO_VERSION={value!r} is not a model version",
                            "a model version number (1, 2, ...) or nothing")
    return value


def _approvers(env: Mapping[str, str]) -> tuple[str, ...]:
    names = read.listed(env, "RICE_APPROVERS")
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}", name):
            raise SettingsError("RICE_APPROVERS",
                                f"RICE_APPROVERS: {name!r} is not an Airflow user id",
                                "comma-separated Airflow user ids (letters, digits, . _ @ -)")
    return names


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    return read.integer(env, name, default, low=1, high=65535)


def _container_name(env: Mapping[str, str]) -> str:
    value = read.text(env, "RICE_ROLLOUT_NAME", PipelineSettings.rollout_name)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", value):
        raise SettingsError("RICE_ROLLOUT_NAME", f"RICE_ROLLOUT_NAME={value!r} is not a "
                            "container name prefix", "lower-case letters, digits and -, "
                            "at most 40")
    return value


def rising_steps(steps: tuple[int, ...]) -> bool:
    """Canary steps: distinct percentages, rising, above 0, ending at 100."""
    return bool(steps) and list(steps) == sorted(set(steps)) and steps[0] > 0 and \
        steps[-1] == 100


def _integers(env: Mapping[str, str], name: str, default: tuple[int, ...], what: str,
              accepts: str, valid) -> tuple[int, ...]:
    """A comma-separated list of whole numbers that `valid` accepts; `default` when unset."""
    items = read.listed(env, name)
    if not items:
        return default
    try:
        values = tuple(int(item) for item in items)
    except ValueError:
        values = ()
    if not values or not valid(values):
        raise SettingsError(name, f"{name}={','.join(items)!r} is not {what}", accepts)
    return values


def _slot_ports(env: Mapping[str, str]) -> tuple[int, int]:
    return _integers(  # type: ignore[return-value]
        env, "RICE_ROLLOUT_SLOT_PORTS", PipelineSettings.rollout_slot_ports, "two ports",
        "two different TCP ports, comma-separated (blue,green)",
        lambda ports: len(ports) == 2 and ports[0] != ports[1] and
        all(1 <= port <= 65535 for port in ports))


def _network(env: Mapping[str, str], name: str = "RICE_ROLLOUT_NETWORK") -> str:
    value = read.text(env, name, "")
    if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise SettingsError(name, f"{name}={value!r} is not a Docker network name",
                            "letters, digits, _ . -, at most 64")
    return value  # its addresses are checked beside it, by the serving Layout


def _addresses(env: Mapping[str, str]) -> tuple[str, ...]:
    import ipaddress

    items = read.listed(env, "RICE_ROLLOUT_ADDRESSES")
    if not items:
        return ()
    accepts = "three different IPv4 addresses, comma-separated (proxy,blue,green)"
    try:
        addresses = tuple(str(ipaddress.IPv4Address(item)) for item in items)
    except ValueError:
        addresses = ()
    if len(addresses) != 3 or len(set(addresses)) != 3:
        raise SettingsError("RICE_ROLLOUT_ADDRESSES", f"RICE_ROLLOUT_ADDRESSES="
                            f"{','.join(items)!r} is not three addresses", accepts)
    return addresses


def _steps(env: Mapping[str, str]) -> tuple[int, ...]:
    return _integers(env, "RICE_ROLLOUT_STEPS", PipelineSettings.rollout_steps,
                     "a rising list of steps", "rising percentages above 0, comma-separated, "
                     "ending at 100 (e.g. 10,50,100)", rising_steps)


def _schedule(env: Mapping[str, str], name: str, default: str) -> str | None:
    """A cron expression; unset: `default`; `none` or set but empty: no schedule."""
    value = env.get(name, default).strip()
    return None if value.lower() in ("", "none") else value


def docker_socket_from(env: Mapping[str, str]) -> str:
    """The engine's socket: RICE_DOCKER_SOCKET, else a unix:// DOCKER_HOST (rootless Docker
    and other engines on another socket), else Docker's default."""
    if explicit := read.text(env, "RICE_DOCKER_SOCKET"):
        return explicit
    host = read.text(env, "DOCKER_HOST")
    if host.startswith("unix://"):
        return host.removeprefix("unix://")
    if host:
        raise SettingsError("DOCKER_HOST", f"DOCKER_HOST={host!r} is not a unix socket",
                            "unix:///path/to/docker.sock (the Docker tasks mount the "
                            "engine's socket)", "set RICE_DOCKER_SOCKET to the socket's path")
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
    build_image: str = ""  # empty: the base (no strip: the image keeps its symbol tables)
    docker_cli_image: str = "docker:27-cli"
    docker_socket: str = DEFAULT_SOCKET
    wheelhouse: str = ""  # for workers without package index access
    keep_builds: int = 5
    train_queue: str = ""  # a Celery queue for `train` alone; empty: the default queue
    docker_queue: str = ""  # the Celery queue of the only workers that hold the socket
    release_executor: str = ""  # the executor (alias) whose broker only the release zone reads
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
    release_api_conn_id: str = "rice_release_api"  # the release zone's own look at approvals
    airflow_url: str = "http://127.0.0.1:8080"  # the UI people open from a commit status
    mlflow_url: str = ""  # the MLflow UI a task's link opens; empty: the run's tracking URI
    prometheus_url: str = ""  # the Prometheus UI roll_out's link opens; empty: no link
    # The connection roll_out reads the canary windows through (PromQL); absent: /metrics.
    prometheus_conn_id: str = "rice_prometheus"
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
    # The rollout (rice_mlops.release.rollout): serve what ships behind the serving proxy, shadow
    # and
    # canary first; off: the run ends at the pushed image and the moved champion.
    rollout: bool = False
    rollout_proxy_image: str = "rice-serving-proxy:local"
    rollout_name: str = "rice-serving"  # container name prefix: two stacks on one engine
    rollout_port: int = 8501
    rollout_slot_ports: tuple[int, int] = (8502, 8503)
    # "": the serving containers use the host's network (the worker runs on the host). Else
    # the Docker network they join at these addresses (proxy, blue, green), the release
    # worker's own (compose).
    rollout_network: str = ""
    rollout_addresses: tuple[str, ...] = ()
    rollout_door_network: str = ""
    rollout_steps: tuple[int, ...] = (10, 50, 100)
    rollout_window_seconds: float = 10.0
    rollout_replay_rate: float = 20.0
    rollout_min_requests: int = 50
    rollout_min_agreement: float = 0.98
    rollout_max_p99_ms: float = 250.0
    # The monitoring (rice_mlops.monitoring): the served model's prediction logs against its
    # reference, each hour; a window grows until it holds the minimum, at most max_window_hours.
    monitoring_schedule: str | None = "0 * * * *"
    monitoring_min_predictions: int = 500
    monitoring_alpha: float = 0.01
    monitoring_max_window_hours: int = 168
    monitoring_max_window_mb: int = 256  # log bytes one window reads, all slots together
    # A drift event starts a training run (which retrains only when labelled data changed);
    # another drift within the cooldown raises no new event.
    retrain_on_drift: bool = True
    monitoring_cooldown_hours: int = 24  # 0: every drift verdict raises an event
    # The serving servers' sample of the images they are asked about, for people to label
    # (RICE_RELEASE_DIR/serving/labelling); 0 keeps no image.
    labelling_sample_rate: float = 0.0
    serving_gid: int = 0  # 0: the release worker's own group shares the serving directories

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineSettings:
        env = os.environ if env is None else env
        data_dir = read.text(env, "RICE_DATA_DIR")
        data_root = read.text(env, "RICE_DATA_ROOT", data_dir)
        repository = read.text(env, "RICE_GITHUB_REPOSITORY")
        allowed = set(read.listed(env, "RICE_ALLOWED_SOURCE_REPOSITORIES")) | {repository}
        return cls(
            schedule=_schedule(env, "RICE_SCHEDULE", DEFAULT_SCHEDULE),
            staging_root=Path(read.text(env, "RICE_STAGING_DIR", str(cls.staging_root))),
            release_dir=read.text(env, "RICE_RELEASE_DIR"),
            data_dir=data_dir,
            data_root=Path(data_root) if data_root else None,
            epochs=read.integer(env, "RICE_EPOCHS", cls.epochs, low=1),
            min_test_accuracy=read.fraction(env, "RICE_MIN_TEST_ACCURACY",
                                            cls.min_test_accuracy),
            max_regression=read.fraction(env, "RICE_MAX_REGRESSION", cls.max_regression),
            min_class_recall=read.fraction(env, "RICE_MIN_CLASS_RECALL", cls.min_class_recall),
            gate_alpha=read.fraction(env, "RICE_GATE_ALPHA", cls.gate_alpha),
            gate_confidence=read.fraction(env, "RICE_GATE_CONFIDENCE", cls.gate_confidence,
                                          strict=True),
            max_image_mb=read.number(env, "RICE_MAX_IMAGE_MB", cls.max_image_mb, low=1.0),
            max_p50_ms=read.number(env, "RICE_MAX_P50_MS", cls.max_p50_ms, low=0.1),
            signing_key_file=read.text(env, "RICE_SIGNING_KEY_FILE"),
            experiment=read.text(env, "RICE_MLFLOW_EXPERIMENT", cls.experiment),
            github_conn_id=read.text(env, "RICE_GITHUB_CONN_ID", cls.github_conn_id),
            github_repository=repository,
            allowed_source_repositories=frozenset(r for r in allowed if r),
            pr_base=read.text(env, "RICE_PR_BASE", cls.pr_base),
            pr_branch=read.text(env, "RICE_PR_BRANCH", cls.pr_branch),
            pr_path=read.text(env, "RICE_PR_PATH", cls.pr_path),
            pr_author=read.text(env, "RICE_PR_AUTHOR", cls.pr_author),
            pr_email=read.text(env, "RICE_PR_EMAIL", cls.pr_email),
            registry_conn_id=read.text(env, "RICE_REGISTRY_CONN_ID", cls.registry_conn_id),
            image_name=read.text(env, "RICE_IMAGE_NAME", cls.image_name),
            base_image=read.text(env, "RICE_BASE_IMAGE"),
            build_image=read.text(env, "RICE_BUILD_IMAGE"),
            docker_cli_image=read.text(env, "RICE_DOCKER_CLI_IMAGE", cls.docker_cli_image),
            docker_socket=docker_socket_from(env),
            wheelhouse=read.text(env, "RICE_SERVING_WHEELHOUSE"),
            keep_builds=read.integer(env, "RICE_KEEP_BUILDS", cls.keep_builds),
            train_queue=read.text(env, "RICE_TRAIN_QUEUE"),
            docker_queue=read.text(env, "RICE_DOCKER_QUEUE"),
            release_executor=read.text(env, "RICE_RELEASE_EXECUTOR"),
            retry_delay_seconds=read.integer(env, "RICE_RETRY_DELAY_SECONDS",
                                             cls.retry_delay_seconds),
            task_timeout_minutes=read.integer(env, "RICE_TASK_TIMEOUT_MINUTES",
                                              cls.task_timeout_minutes, low=1),
            train_timeout_minutes=read.integer(env, "RICE_TRAIN_TIMEOUT_MINUTES",
                                               cls.train_timeout_minutes, low=1),
            train_nice=read.integer(env, "RICE_TRAIN_NICE", cls.train_nice, high=19),
            dagrun_timeout_minutes=read.integer(env, "RICE_DAGRUN_TIMEOUT_MINUTES",
                                                cls.dagrun_timeout_minutes, low=1),
            promote_without_image=read.choice(env, "RICE_PROMOTE_WITHOUT_IMAGE",
                                              cls.promote_without_image,
                                              ("auto", "true", "false")),
            airflow_api_conn_id=read.text(env, "RICE_AIRFLOW_API_CONN_ID",
                                          cls.airflow_api_conn_id),
            release_api_conn_id=read.text(env, "RICE_RELEASE_API_CONN_ID",
                                          cls.release_api_conn_id),
            airflow_url=read.text(env, "RICE_AIRFLOW_URL",
                                  read.text(env, "AIRFLOW__API__BASE_URL",
                                            cls.airflow_url)).rstrip("/"),
            mlflow_url=read.text(env, "RICE_MLFLOW_URL").rstrip("/"),
            prometheus_url=read.text(env, "RICE_PROMETHEUS_URL").rstrip("/"),
            prometheus_conn_id=read.text(env, "RICE_PROMETHEUS_CONN_ID", cls.prometheus_conn_id),
            notify_emails=read.listed(env, "RICE_NOTIFY_EMAILS"),
            notify_from=read.text(env, "RICE_NOTIFY_FROM", cls.notify_from),
            smtp_conn_id=read.text(env, "RICE_SMTP_CONN_ID", cls.smtp_conn_id),
            redelivery_schedule=_schedule(env, "RICE_REDELIVERY_SCHEDULE",
                                          cls.redelivery_schedule),
            github_hook_id=read.text(env, "RICE_GITHUB_HOOK_ID"),
            require_approval=read.flag(env, "RICE_REQUIRE_APPROVAL", cls.require_approval),
            approve_not_significant=read.flag(env, "RICE_APPROVE_NOT_SIGNIFICANT",
                                              cls.approve_not_significant),
            approval_timeout_minutes=read.integer(env, "RICE_APPROVAL_TIMEOUT_MINUTES",
                                                  cls.approval_timeout_minutes, low=1),
            rollback_to_version=_rollback(env),
            approvers=_approvers(env),
            rollout=read.flag(env, "RICE_ROLLOUT", cls.rollout),
            rollout_proxy_image=read.text(env, "RICE_ROLLOUT_PROXY_IMAGE",
                                          cls.rollout_proxy_image),
            rollout_name=_container_name(env),
            rollout_port=_port(env, "RICE_ROLLOUT_PORT", cls.rollout_port),
            rollout_slot_ports=_slot_ports(env),
            rollout_network=_network(env),
            rollout_addresses=_addresses(env),
            rollout_door_network=_network(env, "RICE_ROLLOUT_DOOR_NETWORK"),
            rollout_steps=_steps(env),
            rollout_window_seconds=read.number(env, "RICE_ROLLOUT_WINDOW_SECONDS",
                                               cls.rollout_window_seconds, low=1.0),
            rollout_replay_rate=read.number(env, "RICE_ROLLOUT_REPLAY_RATE",
                                            cls.rollout_replay_rate, low=1.0),
            rollout_min_requests=read.integer(env, "RICE_ROLLOUT_MIN_REQUESTS",
                                              cls.rollout_min_requests, low=1),
            rollout_min_agreement=read.fraction(env, "RICE_ROLLOUT_MIN_AGREEMENT",
                                                cls.rollout_min_agreement),
            rollout_max_p99_ms=read.number(env, "RICE_ROLLOUT_MAX_P99_MS",
                                           cls.rollout_max_p99_ms, low=1.0),
            monitoring_schedule=_schedule(env, "RICE_MONITORING_SCHEDULE",
                                          cls.monitoring_schedule),
            monitoring_min_predictions=read.integer(env, "RICE_MONITORING_MIN_PREDICTIONS",
                                                    cls.monitoring_min_predictions, low=1),
            monitoring_alpha=read.fraction(env, "RICE_MONITORING_ALPHA", cls.monitoring_alpha,
                                           strict=True),
            monitoring_max_window_hours=read.integer(env, "RICE_MONITORING_MAX_WINDOW_HOURS",
                                                     cls.monitoring_max_window_hours, low=1),
            monitoring_max_window_mb=read.integer(env, "RICE_MONITORING_MAX_WINDOW_MB",
                                                  cls.monitoring_max_window_mb, low=1),
            retrain_on_drift=read.flag(env, "RICE_RETRAIN_ON_DRIFT", cls.retrain_on_drift),
            monitoring_cooldown_hours=read.integer(env, "RICE_MONITORING_COOLDOWN_HOURS",
                                                   cls.monitoring_cooldown_hours),
            labelling_sample_rate=read.fraction(env, "RICE_LABELLING_SAMPLE_RATE",
                                                cls.labelling_sample_rate),
            serving_gid=read.integer(env, "RICE_SERVING_GID", cls.serving_gid),
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
        """Operator kwargs routing a task to its queue (`train` or `docker`), when one is set;
        the release zone's tasks also to their own executor (its own broker), when one is."""
        name = {"train": self.train_queue, "docker": self.docker_queue}[which]
        routing = {"queue": name} if name else {}
        if which == "docker" and self.release_executor:
            routing["executor"] = self.release_executor
        return routing
