"""Operator extra links: from a task in the Airflow UI to what it made (the MLflow run, the
model card, the pull request, the image in the registry, the served version and the rollout's
graph in Prometheus).

Airflow 3 computes a task's links in its worker as the task ends (`get_link`, with the running
task instance as `ti_key`) and keeps each as an XCom (`_link_<class>`) that the UI and the REST
API read (`.../taskInstances/{task}/links`); the serialized DAG carries each link's name and
XCom key, so the API server needs neither these classes nor a plugin. A link is built from the
task's own result, checked again here (run id, experiment id, digest, an http(s) URL), and is
empty, so not shown, when the task made nothing: a failed or skipped task links nowhere.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import time
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from rice_mlops.core.handoffs import unwrapped
from rice_mlops.core.run_policy import DIGEST
from rice_mlops.core.settings import PipelineSettings

_RUN_ID = re.compile(r"[0-9a-f]{32}")
_EXPERIMENT = re.compile(r"[0-9]{1,19}")
_HTTP = re.compile(r"https?://[^\s\"'<>\\]{1,2000}")
_REFERENCE = re.compile(  # host[:port]/name@<digest>, as push.sh reports it
    rf"([A-Za-z0-9.-]+(?::[0-9]{{1,5}})?)/([a-z0-9._/-]{{1,255}})@({DIGEST.pattern})")
MODEL_CARD = "model_card/MODEL_CARD.md"  # where training logs it on the MLflow run


def _fields(value) -> dict:
    """A result as a dict of its fields: a hand-off, a plain dict, or nothing."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    value = unwrapped(value)
    return value if isinstance(value, dict) else {}


def http_url(url) -> str:
    """`url` when it is one http(s) URL with nothing a page could misread, else ""."""
    return url if isinstance(url, str) and _HTTP.fullmatch(url) else ""


def mlflow_base(settings: PipelineSettings, trained: dict) -> str:
    """The MLflow UI people open: RICE_MLFLOW_URL, else the run's own tracking URI."""
    return http_url((settings.mlflow_url or str(trained.get("tracking_uri") or "")).rstrip("/"))


def mlflow_run_url(settings: PipelineSettings, trained: dict) -> str:
    base, run, experiment = (mlflow_base(settings, trained), str(trained.get("run_id") or ""),
                             str(trained.get("experiment_id") or ""))
    if not (base and _RUN_ID.fullmatch(run) and _EXPERIMENT.fullmatch(experiment)):
        return ""
    return f"{base}/#/experiments/{experiment}/runs/{run}"


def model_card_url(settings: PipelineSettings, trained: dict) -> str:
    """The model card shown in MLflow's UI, on its run's artifacts tab (the server's own
    `get-artifact` route would make the browser download it instead)."""
    run_page = mlflow_run_url(settings, trained)
    return f"{run_page}/artifacts/{MODEL_CARD}" if run_page else ""


def manifest_url(reference: str) -> str:
    """The registry's page for `host/name@sha256:...`: its manifest (plain http on loopback,
    where the pipeline's registry listens, https anywhere else)."""
    match = _REFERENCE.fullmatch(reference or "")
    if not match or ".." in match.group(2):
        return ""
    host, name, digest = match.groups()
    scheme = "http" if _loopback(host.rsplit(":", 1)[0]) else "https"
    return f"{scheme}://{host}/v2/{name}/manifests/{digest}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def served_version_url(settings: PipelineSettings, served: dict) -> str:
    return f"http://127.0.0.1:{settings.rollout_port}/version" if served.get("served") else ""


# The rollout as Prometheus saw it: each slot's answers a second, the shift of traffic from
# stable to the candidate through shadow, 10, 50 and 100 %.
# (The endpoints are verdicts.PREDICTION_ENDPOINTS, written out: the DAG file imports this
# module, and the rollout's verdicts, with prometheus_client, need not load at parse time.)
ROLLOUT_QUERY = ('sum by (slot) (rate(rice_serving_requests_total'
                 '{endpoint=~"/predict|/invocations"}[15s]))')


def rollout_graph_url(settings: PipelineSettings, served: dict, now: float) -> str:
    """The Prometheus graph of the rollout that ended at `now` (when the link is made, at the
    end of `roll_out`), over its duration and a minute each side; "" without a Prometheus or
    without a rollout (skipped, failed)."""
    base = settings.prometheus_url
    seconds = served.get("seconds")
    if not base or not _HTTP.fullmatch(base) or "summary" not in served or \
            not isinstance(seconds, int | float) or isinstance(seconds, bool) or \
            not 0 <= seconds < 86400:
        return ""
    # Minutes: the form both of Prometheus 2's graph pages read (Debian's serves the classic
    # one, /graph redirecting to /classic/graph with the query kept).
    end = time.strftime("%Y-%m-%d %H:%M", time.gmtime(now + 60))
    span = f"{int(seconds) // 60 + 3}m"
    return (f"{base}/graph?g0.expr={quote(ROLLOUT_QUERY, safe='')}&g0.tab=0&g0.stacked=1"
            f"&g0.range_input={span}&g0.end_input={quote(end)}")


def _result(ti, task_id: str | None = None):
    try:
        return ti.xcom_pull(task_ids=task_id or ti.task_id)
    except Exception:  # noqa: BLE001 - no result, no link: the task's own outcome stands
        return None


def _pull(ti, task_id: str | None = None) -> dict:
    return _fields(_result(ti, task_id))


def _settings() -> PipelineSettings:
    return PipelineSettings.from_env()


class MlflowRunLink(BaseOperatorLink):
    """`train` → its MLflow run."""

    name = "MLflow run"

    def get_link(self, operator, *, ti_key) -> str:
        return mlflow_run_url(_settings(), _pull(ti_key))


class ModelCardLink(BaseOperatorLink):
    """`quality_gate` → the model card of the version it judged (once it judged one)."""

    name = "Model card"

    def get_link(self, operator, *, ti_key) -> str:
        if not _pull(ti_key).get("version"):
            return ""
        return model_card_url(_settings(), _pull(ti_key, "train"))


class PullRequestLink(BaseOperatorLink):
    """`open_pull_request` → the pull request it opened or updated."""

    name = "Pull request"

    def get_link(self, operator, *, ti_key) -> str:
        return http_url(_pull(ti_key).get("pull_request"))


class RegistryImageLink(BaseOperatorLink):
    """`push_image` / `attest_image` → the pushed image's manifest, by digest."""

    name = "Image in the registry"

    def get_link(self, operator, *, ti_key) -> str:
        # push_image's result is push.sh's output, whose last line names the digest
        result = _result(ti_key) if ti_key.task_id == "push_image" \
            else _pull(ti_key).get("digest_ref")
        last = (result or "").strip().splitlines()[-1:] if isinstance(result, str) else []
        return manifest_url(last[0].strip() if last else "")


class ServedVersionLink(BaseOperatorLink):
    """`roll_out` → `/version` of what serves, once the rollout served it."""

    name = "Served version"

    def get_link(self, operator, *, ti_key) -> str:
        return served_version_url(_settings(), _pull(ti_key))


class RolloutGraphLink(BaseOperatorLink):
    """`roll_out` → Prometheus's graph of each slot's traffic through the rollout."""

    name = "Rollout in Prometheus"

    def get_link(self, operator, *, ti_key) -> str:
        return rollout_graph_url(_settings(), _pull(ti_key), time.time())


# The tasks that make something a person would open, and the links to it.
LINKS_BY_TASK = {"train": (MlflowRunLink(),), "quality_gate": (ModelCardLink(),),
                 "open_pull_request": (PullRequestLink(),),
                 "push_image": (RegistryImageLink(),), "attest_image": (RegistryImageLink(),),
                 "roll_out": (ServedVersionLink(), RolloutGraphLink())}


def attach_links(dag) -> None:
    """Give each task of `dag` that makes something its links (call once it is wired)."""
    for task_id, links in LINKS_BY_TASK.items():
        if task_id in dag.task_dict:
            dag.task_dict[task_id].operator_extra_links = links
