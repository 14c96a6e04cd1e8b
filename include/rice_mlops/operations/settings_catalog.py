"""Every variable the package reads, described once: name, field, default, accepts, meaning.

Three settings classes read them, all with the readers of `rice_mlops.core.readers`: the pipeline's
`PipelineSettings`, the webhook's `WebhookSettings` and the command line's and service helpers'
`ToolSettings` (the serving image's server keeps its own parser and documents its variables in
docs/serving.md). Each catalogue below generates one table of docs/configuration.md
(`rice_mlops.operations.settings_tables`, run by `scripts/settings-table [--check]`). A default is
the field's default in the entry's settings class unless the entry describes it in words (a
fallback to another variable, or a value decided elsewhere); the unit tests hold each catalogue
to its class's `from_env`: one entry per field, every variable it reads, the defaults it gives
and the bounds it enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial

from rice_mlops.core.settings import PipelineSettings
from rice_mlops.ingress.settings import WebhookSettings
from rice_mlops.operations.tool_settings import ToolSettings


@dataclass(frozen=True)
class Setting:
    env: str  # the variable
    field: str  # the field it fills in `of`
    kind: str  # what it accepts, as people read it: "integer ≥ 1", "fraction 0–1", ...
    meaning: str
    default_text: str = ""  # empty: the field's default, shown as a value
    of: type = PipelineSettings  # the settings class that reads it

    @property
    def default(self):
        """The field's default in its settings class."""
        return {f.name: f.default for f in fields(self.of)}[self.field]

    @property
    def shown_default(self) -> str:
        return self.default_text or shown(self.default)


def shown(value) -> str:
    """A default as the table shows it: numbers bare, text in backquotes, nothing as a dash."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (frozenset, tuple)):
        return ", ".join(f"`{v}`" for v in sorted(value)) or "—"
    if value is None or str(value) == "":
        return "—"
    return f"`{value}`"


# An entry of each catalogue: Setting(env, field, kind, meaning[, default_text]).
_s = partial(Setting, of=PipelineSettings)
_w = partial(Setting, of=WebhookSettings)
_t = partial(Setting, of=ToolSettings)


_MINUTES = "integer ≥ 1"
SETTINGS: tuple[Setting, ...] = (
    _s("RICE_SCHEDULE", "schedule", "cron or `none`",
       "nightly cron (UTC); `none` for API-triggered runs only"),
    _s("RICE_STAGING_DIR", "staging_root", "path",
       "per-run staging (model artifacts, the model card); the workers of every zone write it"),
    _s("RICE_RELEASE_DIR", "release_dir", "path",
       "the release zone's own directory: build contexts, smoke sets, the serving wheel cache; "
       "the Docker bind source, so the same path on the Docker host and the Docker worker, "
       "which alone mounts it", "`<RICE_STAGING_DIR>-release`"),
    _s("RICE_DATA_DIR", "data_dir", "path",
       "dataset used when the run's `data_dir` is empty; empty means synthetic"),
    _s("RICE_DATA_ROOT", "data_root", "path",
       "a run's `data_dir` must resolve under it; unset (and no `RICE_DATA_DIR`): conf may not "
       "name a dataset", "`RICE_DATA_DIR`"),
    _s("RICE_EPOCHS", "epochs", "integer ≥ 1", "default of the `epochs` param"),
    _s("RICE_MIN_TEST_ACCURACY", "min_test_accuracy", "fraction 0–1",
       "the gate's bar: default and floor of the `min_test_accuracy` param"),
    _s("RICE_MAX_REGRESSION", "max_regression", "fraction 0–1",
       "how much worse than the champion is tolerated: default and ceiling of "
       "`max_regression`"),
    _s("RICE_MIN_CLASS_RECALL", "min_class_recall", "fraction 0–1",
       "every class's test recall must reach it, or the gate refuses naming the class"),
    _s("RICE_GATE_ALPHA", "gate_alpha", "fraction 0–1",
       "significance level of McNemar's exact test: a challenger significantly worse than the "
       "champion is refused; a lead with p ≥ alpha passes as `significant: false`"),
    _s("RICE_GATE_CONFIDENCE", "gate_confidence", "fraction strictly between 0 and 1",
       "confidence of the interval for the accuracy difference (gate) and the accuracy "
       "intervals (model card)"),
    _s("RICE_MAX_IMAGE_MB", "max_image_mb", "number ≥ 1",
       "the serving image's size budget (MB, from the engine after the smoke test); over it "
       "nothing is pushed"),
    _s("RICE_MAX_P50_MS", "max_p50_ms", "number ≥ 0.1",
       "the serving image's p50 `/predict` latency budget (ms, measured on the smoke images "
       "after the smoke test, no network); over it nothing is pushed"),
    _s("RICE_SIGNING_KEY_FILE", "signing_key_file", "path",
       "the pipeline's Ed25519 private key (PEM) that signs model files, provenance and "
       "attachments: a file on the release (Docker-queue) worker alone, the only place the key "
       "is read from (no Airflow connection: any task may read any connection). Without a key "
       "the image stages fail with that reason"),
    _s("RICE_MLFLOW_EXPERIMENT", "experiment", "name", "experiment of the training runs"),
    _s("RICE_GITHUB_CONN_ID", "github_conn_id", "connection id",
       "the GitHub connection the pull request is opened with (connection `github_default` "
       "below)"),
    _s("RICE_GITHUB_REPOSITORY", "github_repository", "`owner/name`",
       "where the pull request goes (conf cannot change it); unset skips the pull request"),
    _s("RICE_ALLOWED_SOURCE_REPOSITORIES", "allowed_source_repositories",
       "comma-separated `owner/name`",
       "a run's `source_repository` may name these, besides `RICE_GITHUB_REPOSITORY`; none "
       "configured: any well-formed name"),
    _s("RICE_PR_BASE", "pr_base", "branch",
       "where the artifacts go: the base branch of the pull request"),
    _s("RICE_PR_BRANCH", "pr_branch", "branch",
       "where the artifacts go: the branch the artifact commit is pushed to, the pull "
       "request's head"),
    _s("RICE_PR_PATH", "pr_path", "path in the repository",
       "where the artifacts go: their directory in the repository"),
    _s("RICE_PR_AUTHOR", "pr_author", "name", "author of the artifact commit"),
    _s("RICE_PR_EMAIL", "pr_email", "e-mail address", "author's e-mail of the artifact commit"),
    _s("RICE_REGISTRY_CONN_ID", "registry_conn_id", "connection id",
       "the registry connection the image is pushed with (connection `rice_registry` below)"),
    _s("RICE_IMAGE_NAME", "image_name", "name", "image repository name"),
    _s("RICE_BASE_IMAGE", "base_image", "image reference", "base of the serving image",
       "the Dockerfile's `python:3.11-slim`"),
    _s("RICE_BUILD_IMAGE", "build_image", "image reference",
       "the serving image's build stage: the base plus Debian's binutils, whose `strip` makes "
       "the image about 19 MB smaller (`scripts/docker-engine` builds `rice-base/build`)",
       "the base image (no `strip`: the shared objects keep their symbol tables)"),
    _s("RICE_DOCKER_CLI_IMAGE", "docker_cli_image", "image reference",
       "image the build and push tasks run the docker CLI in"),
    _s("RICE_DOCKER_SOCKET", "docker_socket", "path",
       "the engine; when absent the image stages are skipped with that reason (and nothing "
       "ships); a `DOCKER_HOST` that is not a unix socket is refused",
       "from `DOCKER_HOST` (`unix://…`), else `/var/run/docker.sock`"),
    _s("RICE_SERVING_WHEELHOUSE", "wheelhouse", "path",
       "directory of serving wheels (`rice-mlops image wheels --dest DIR`) for workers that "
       "cannot reach the package index"),
    _s("RICE_KEEP_BUILDS", "keep_builds", "integer ≥ 0",
       "runs whose staging directory and local image tags the `prune_old_builds` task keeps "
       "(pushed images stay in the registry)"),
    _s("RICE_TRAIN_QUEUE", "train_queue", "Celery queue",
       "Celery queue for `train` alone (workers started with `--queues NAME`, e.g. a bigger "
       "host)"),
    _s("RICE_DOCKER_QUEUE", "docker_queue", "Celery queue",
       "Celery queue of the release zone's tasks (`prune_old_builds`, `prepare_image_context`, "
       "`build_image`, `smoke_test`, `push_image`, `attest_image`, `promote`): in compose only "
       "`airflow-worker-docker` listens on it and holds the engine socket and the registry "
       "connection", "— (`docker` in compose)"),
    _s("RICE_RELEASE_EXECUTOR", "release_executor", "name",
       "Airflow executor of the release zone's tasks (queue `RICE_DOCKER_QUEUE`): in compose "
       "`release`, the `rice_mlops.stages.release_executor` Celery executor whose broker only the "
       "scheduler and `airflow-worker-docker` reach; it must be listed in "
       "`AIRFLOW__CORE__EXECUTOR` wherever the DAGs are parsed", "— (`release` in compose)"),
    _s("RICE_RETRY_DELAY_SECONDS", "retry_delay_seconds", "integer ≥ 0",
       "delay between the two retries every task gets"),
    _s("RICE_TASK_TIMEOUT_MINUTES", "task_timeout_minutes", _MINUTES,
       "`execution_timeout` of every task but `train`"),
    _s("RICE_TRAIN_TIMEOUT_MINUTES", "train_timeout_minutes", _MINUTES,
       "`execution_timeout` of `train`"),
    _s("RICE_TRAIN_NICE", "train_nice", "integer 0–19",
       "nice level of the `train` task's process, so a training on shared cores leaves the "
       "webhook and the scheduler their CPU"),
    _s("RICE_DAGRUN_TIMEOUT_MINUTES", "dagrun_timeout_minutes", _MINUTES,
       "`dagrun_timeout` of a whole run"),
    _s("RICE_PROMOTE_WITHOUT_IMAGE", "promote_without_image", "one of auto/true/false",
       "may `champion` move when no image was pushed: `auto` only when no `rice_registry` "
       "connection exists, `true`, `false`"),
    _s("RICE_AIRFLOW_API_CONN_ID", "airflow_api_conn_id", "connection id",
       "the DAG's own service account on the REST API (http connection: host, port, login, "
       "password; role `user`): run notes and the newer-push check; without it both are "
       "skipped with the reason in the log"),
    _s("RICE_RELEASE_API_CONN_ID", "release_api_conn_id", "connection id",
       "the release zone's own account on the REST API (http connection; in compose the "
       "`release` account, grant `verify`, held by `airflow-worker-docker` alone): before "
       "anything is built, `approve_release`'s answer is read there and must come from a "
       "person of `RICE_APPROVERS` (an answer written with a task's token has none); without "
       "it the check is skipped, saying so (a one-zone deployment such as the demo)"),
    _s("RICE_AIRFLOW_URL", "airflow_url", "URL",
       "the Airflow UI the commit status links to (`<url>/dags/rice_classifier_cicd/runs/<run>`)",
       "`AIRFLOW__API__BASE_URL`, else `http://127.0.0.1:8080`"),
    _s("RICE_MLFLOW_URL", "mlflow_url", "URL",
       "the MLflow UI the tasks' extra links open (`train` → its run, `quality_gate` → the "
       "model card), where people reach it (compose: the published port)",
       "the run's tracking URI"),
    _s("RICE_PROMETHEUS_URL", "prometheus_url", "URL",
       "the Prometheus UI where people reach it (compose: the published port): `roll_out`'s "
       "link to the rollout's graph, and the demo's summary", "no link"),
    _s("RICE_PROMETHEUS_CONN_ID", "prometheus_conn_id", "connection id",
       "the Prometheus `roll_out` reads each canary window from (PromQL, host, port, login and "
       "password of an http connection); when the connection does not exist, `roll_out` reads "
       "the servers' `/metrics` itself", "`rice_prometheus`"),
    _s("RICE_NOTIFY_EMAILS", "notify_emails", "comma-separated e-mail addresses",
       "recipients of an e-mail on a crash or a NOT SHIPPED run; nothing is sent when empty"),
    _s("RICE_NOTIFY_FROM", "notify_from", "e-mail address", "sender of Airflow's SMTP notifier"),
    _s("RICE_SMTP_CONN_ID", "smtp_conn_id", "connection id",
       "the SMTP connection of Airflow's SMTP notifier"),
    _s("RICE_REDELIVERY_SCHEDULE", "redelivery_schedule", "cron or `none`",
       "the `rice_webhook_redelivery` DAG; `none` turns it off"),
    _s("RICE_GITHUB_HOOK_ID", "github_hook_id", "webhook id",
       "the repository webhook to watch; empty: the one whose URL ends in `/webhooks/github`"),
    _s("RICE_REQUIRE_APPROVAL", "require_approval", "one of true/false",
       "a person approves every release (otherwise only when the gate calls the lead not "
       "significant, or the run's conf sets `require_approval`)"),
    _s("RICE_APPROVE_NOT_SIGNIFICANT", "approve_not_significant", "one of true/false",
       "ask a person when the gate says the challenger's lead may be noise "
       "(`significant: false`)"),
    _s("RICE_APPROVAL_TIMEOUT_MINUTES", "approval_timeout_minutes", _MINUTES,
       "how long `approve_release` waits; no answer means Reject: not shipped"),
    _s("RICE_APPROVERS", "approvers", "comma-separated Airflow user ids",
       "the only people who may answer `approve_release` (its assigned users); empty: anyone "
       "allowed to update the run's task instances (in SimpleAuthManager, every `user` role)"),
    _s("RICE_ROLLBACK_TO_VERSION", "rollback_to_version", "model version number",
       "on the release workers: an allowed rollback. `promote` refuses an image whose signed "
       "model version is older than the champion it recorded unless this names that version"),
    _s("RICE_ROLLOUT", "rollout", "one of true/false",
       "serve what ships: `roll_out` starts the verified image beside the one serving, mirrors "
       "traffic to it (shadow), then moves traffic in the canary steps, and rolls back on a "
       "breached budget; `champion` moves only after. `false`: the run ends at the pushed "
       "image and the moved champion"),
    _s("RICE_ROLLOUT_PROXY_IMAGE", "rollout_proxy_image", "image reference",
       "the serving proxy's image (Debian's nginx; `scripts/docker-engine start` builds it)"),
    _s("RICE_ROLLOUT_NAME", "rollout_name", "lower-case name, at most 40",
       "prefix of the serving containers' names (`-proxy`, `-blue`, `-green`): two stacks on "
       "one engine need two"),
    _s("RICE_ROLLOUT_PORT", "rollout_port", "integer 1–65535",
       "the serving endpoint users call on 127.0.0.1 (the proxy): `/predict`, "
       "`/invocations`, `/ping`, `/metrics`"),
    _s("RICE_ROLLOUT_SLOT_PORTS", "rollout_slot_ports", "two TCP ports",
       "loopback ports of the two serving slots (blue, green): stable in one, the candidate "
       "in the other"),
    _s("RICE_ROLLOUT_NETWORK", "rollout_network", "Docker network name",
       "empty: the serving containers use the host's network (the worker runs on the host, "
       "as in `make demo`). Else the Docker network they join, which the release worker is "
       "on too (compose: `rice-serving`); only the proxy is then published, on the host's "
       "127.0.0.1"),
    _s("RICE_ROLLOUT_ADDRESSES", "rollout_addresses", "three IPv4 addresses",
       "with `RICE_ROLLOUT_NETWORK`: the proxy's, blue's and green's fixed addresses on it "
       "(fixed, so the proxy's configuration never names a server that is not running)"),
    _s("RICE_ROLLOUT_DOOR_NETWORK", "rollout_door_network", "Docker network name",
       "with `RICE_ROLLOUT_NETWORK`: the network the proxy publishes its port from, so that "
       "the serving network can be internal (Docker publishes no port from an internal "
       "network; compose: `rice-serving-door`, which no server joins). Empty: the port is "
       "published from the serving network"),
    _s("RICE_ROLLOUT_STEPS", "rollout_steps", "rising percentages ending at 100",
       "the canary's share of requests at each step"),
    _s("RICE_ROLLOUT_WINDOW_SECONDS", "rollout_window_seconds", "number ≥ 1",
       "how long each canary step is measured (both servers' `/metrics` before and after)"),
    _s("RICE_ROLLOUT_REPLAY_RATE", "rollout_replay_rate", "number ≥ 1",
       "requests a second of the smoke set the release zone sends through the proxy during "
       "each stage, so every stage has traffic to measure however quiet the service is"),
    _s("RICE_ROLLOUT_MIN_REQUESTS", "rollout_min_requests", "integer ≥ 1",
       "shadow: requests both servers must have answered (joined by request id); each "
       "canary step: its share of them answered by the candidate (5 at 10 % of 50), the "
       "window repeated up to 4 times until they are"),
    _s("RICE_ROLLOUT_MIN_AGREEMENT", "rollout_min_agreement", "fraction 0–1",
       "shadow: the candidate's share of answers equal to stable's on the same requests"),
    _s("RICE_ROLLOUT_MAX_P99_MS", "rollout_max_p99_ms", "number ≥ 1",
       "shadow and canary: the candidate's p99 latency budget (ms, from its histogram); "
       "any 5xx from the candidate also rolls back"),
    _s("RICE_MONITORING_SCHEDULE", "monitoring_schedule", "cron or `none`",
       "when `rice_monitoring` compares the served model's prediction logs with its "
       "reference (UTC)"),
    _s("RICE_MONITORING_MIN_PREDICTIONS", "monitoring_min_predictions", "integer ≥ 1",
       "predictions a window needs before it is judged; a shorter one is \"not enough data\" "
       "and grows into the next run's"),
    _s("RICE_MONITORING_ALPHA", "monitoring_alpha", "fraction strictly between 0 and 1",
       "the family-wise false-alarm rate of one window (Holm over all its tests)"),
    _s("RICE_MONITORING_MAX_WINDOW_HOURS", "monitoring_max_window_hours", "integer ≥ 1",
       "the oldest predictions a window may still include"),
    _s("RICE_MONITORING_MAX_WINDOW_MB", "monitoring_max_window_mb", "integer ≥ 1",
       "the prediction-log bytes one window reads, all slots together, newest files first "
       "(the servers keep up to 100 files of 64 MiB each; what is left out is logged)"),
    _s("RICE_MONITORING_COOLDOWN_HOURS", "monitoring_cooldown_hours", "integer ≥ 0",
       "after a `rice_drift` event, how long another drift verdict raises none (a drift "
       "storm is one event, one training run)"),
    _s("RICE_RETRAIN_ON_DRIFT", "retrain_on_drift", "one of true/false",
       "a `rice_drift` event starts a training run beside the cron (`AssetOrTimeSchedule`); "
       "it retrains only when the data or code changed, else its note names the drift"),
    _s("RICE_LABELLING_SAMPLE_RATE", "labelling_sample_rate", "fraction 0–1",
       "the share of `/predict` images the serving servers keep for labelling, in "
       "`<RICE_RELEASE_DIR>/serving/labelling` (at most 1,000 images and 256 MiB per server, "
       "an image's record beside it); a drift note counts them. 0: no image is kept"),
    _s("RICE_SERVING_GID", "serving_gid", "integer ≥ 0",
       "the group through which the release worker shares the prediction-log and labelling "
       "directories with the serving containers (mode 2770; the worker must be a member: "
       "compose's `group_add`); 0: the worker's own group. Never world-writable",
       "— (50100 in compose)"),
)


_SECONDS = "number > 0"
WEBHOOK_SETTINGS: tuple[Setting, ...] = (
    _w("GITHUB_WEBHOOK_SECRET", "secret", "secret, ≥ 32 characters",
       "the webhook secret (the plugin refuses to start with a shorter one and names the "
       "variable); unset (and no `GITHUB_WEBHOOK_SECRET_VARIABLE`) means every delivery is "
       "refused. `rice-mlops webhook send` and the demo sign with it"),
    _w("GITHUB_WEBHOOK_SECRET_VARIABLE", "secret_variable", "Airflow Variable key",
       "with `GITHUB_WEBHOOK_SECRET` unset: name of an Airflow Variable holding the secret, so "
       "a secrets backend (Vault, AWS SM, ...) can keep it; re-read every minute, the replaced "
       "value accepted for an hour (the compose file uses `GITHUB_WEBHOOK_SECRET` from `.env`)"),
    _w("GITHUB_WEBHOOK_SECRET_PREVIOUS", "previous_secret", "secret, ≥ 32 characters",
       "the old secret, still accepted while a rotation is under way, for "
       "`GITHUB_WEBHOOK_PREVIOUS_SECRET_TTL` seconds after the API server starts"),
    _w("GITHUB_WEBHOOK_PREVIOUS_SECRET_TTL", "previous_ttl", _SECONDS,
       "how long a previous secret (the variable above, or the value a Variable replaced) "
       "stays valid"),
    _w("GITHUB_WEBHOOK_BODY_TIMEOUT", "body_deadline", _SECONDS,
       "seconds a delivery may take to send its body (GitHub gives up after 10 s); slower ones "
       "get 408 and the connection is closed"),
    _w("GITHUB_WEBHOOK_MAX_UNVERIFIED", "max_unverified", "integer ≥ 1",
       "unsigned body bytes held at once, in 25 MB bodies: at most 8 × 25 MB, counted as they "
       "arrive (never as declared, so idle connections hold none); bytes over it get 503 at "
       "once"),
    _w("GITHUB_WEBHOOK_FIRST_BYTE_TIMEOUT", "first_byte_deadline", _SECONDS,
       "seconds from a delivery's headers to its body's first byte; later: 408"),
    _w("GITHUB_WEBHOOK_MIN_BODY_RATE", "min_body_rate", _SECONDS,
       "bytes a second a body must average after that; slower: 408 before the timeout above"),
    _w("GITHUB_WEBHOOK_RECENT_SECONDS", "recent_seconds", _SECONDS,
       "a push whose run this receiver triggered (or found) within this time, or is triggering "
       "now, is answered as a duplicate without asking the REST API again: a replayed signed "
       "body costs a lookup, not a database transaction; a run deleted since is asked for "
       "again once this time has passed"),
    _w("GITHUB_WEBHOOK_BRANCH", "branch", "branch", "the branch whose pushes trigger"),
    _w("GITHUB_WEBHOOK_REPOSITORIES", "repositories", "comma-separated `owner/name`, or `*`",
       "allow-list of the repositories whose pushes trigger; `*`: any repository that signs "
       "with the secret; a push from another one is answered 202, logged at warning and "
       "counted (`kind=\"repository\"`)", "`RICE_GITHUB_REPOSITORY`; neither: no push triggers"),
    _w("RICE_WEBHOOK_DAG_ID", "dag_id", "DAG id",
       "the DAG a push triggers (a staging copy of the pipeline, say); the service account "
       "must be allowed to trigger it"),
    _w("AIRFLOW_WEBHOOK_API_URL", "api_url", "URL",
       "the API server's own REST API, as the webhook reaches it",
       "`AIRFLOW__API__BASE_URL`, else `http://127.0.0.1:8080`"),
    _w("AIRFLOW_WEBHOOK_USERNAME", "username", "Airflow user id",
       "service account the webhook triggers with (role `user`; in compose it may trigger "
       "`rice_classifier_cicd` and nothing else)", "set by `scripts/airflow-stack`"),
    _w("AIRFLOW_WEBHOOK_PASSWORD", "password", "secret",
       "that account's password", "set by `scripts/airflow-stack`"),
    _w("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "triggers_at_once", "Airflow's database URL",
       "Airflow's own setting, read to decide one thing: how many runs the webhook triggers at "
       "once. One on SQLite (concurrent triggers fail \"database is locked\" there), two "
       "otherwise (a burst of new pushes waits in the receiver, not in the API server's threads)",
       "SQLite: 1"),
)

TOOL_SETTINGS: tuple[Setting, ...] = (
    _t("REGISTRY_USERNAME", "registry_username", "registry login",
       "`rice-mlops image verify`: the registry login (from the environment only, never argv)"),
    _t("REGISTRY_PASSWORD", "registry_password", "secret",
       "`rice-mlops image verify`: the registry password"),
    _t("RICE_SERVICE_ACCOUNTS", "service_accounts", "comma-separated name=grant",
       "the API server's auth manager (`rice_mlops.operations.accounts`): accounts held to a grant "
       "(`trigger`, `annotate`, `verify`) whatever their role; an unknown grant stops the API "
       "server"),
    _t("MLFLOW_TRACKING_URI", "mlflow_tracking_uri", "URL",
       "the tracking server (`mlflow-users` sets the pipeline's user up there; MLflow's client "
       "reads it too, with `MLFLOW_TRACKING_USERNAME`/`PASSWORD` the pipeline's user: see "
       "\"MLflow: who may write\")"),
    _t("MLFLOW_AUTH_ADMIN_USERNAME", "mlflow_admin_username", "name",
       "`mlflow-users`: the MLflow admin, which manages users and nothing else"),
    _t("MLFLOW_AUTH_ADMIN_PASSWORD", "mlflow_admin_password", "secret",
       "`mlflow-users`: the admin's password (required)"),
    _t("MLFLOW_PIPELINE_USERNAME", "mlflow_pipeline_username", "name",
       "`mlflow-users`: the pipeline's own MLflow user, created or given this password "
       "(required)"),
    _t("MLFLOW_PIPELINE_PASSWORD", "mlflow_pipeline_password", "secret",
       "`mlflow-users`: that user's password (required)"),
    _t("RICE_PRELOAD", "preload", "comma-separated module names, or `none`",
       "what a Celery worker, or the scheduler of a LocalExecutor, imports once before it "
       "forks task processes, so no task imports it again "
       "(`rice_mlops.operations.preload`; compose's Docker worker leaves MLflow out)"),
    _t("RICE_BROKER_WAIT_SECONDS", "broker_wait_seconds", "number > 0",
       "a remote worker (`docker-compose.worker.yaml`) waits this long for an unreachable "
       "broker before it gives up; a refused password or certificate stops it at once "
       "(`rice_mlops.operations.broker_check`)"),
)
