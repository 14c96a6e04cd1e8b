"""Publication: what the run tells GitHub, the pull request and the commit status.

Runs on the default worker (compute zone), which holds the GitHub token (`github_default`).
`open_pull_request` commits the staged artifacts and the model card to the model branch;
`commit_status` is posted by admission and the report; `redeliver_failed_pushes` is the
webhook redelivery DAG's one task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from rice_mlops.core.handoffs import Gate, Image, Trained
from rice_mlops.core.run_policy import RunRequest
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.core.vocabulary import DAG_ID
from rice_mlops.stages.common import checked_handoffs, checked_request, staged_dir

log = logging.getLogger(__name__)


@checked_handoffs
def open_pull_request(settings: PipelineSettings, params: Mapping, trained: Trained,
                      gate: Gate, image: Image | None, dag_run_id: str) -> dict:
    """Commit the staged artifacts and model card to the model branch; open or update its PR."""
    import json

    from rice_mlops.core import model_registry as registry
    from rice_mlops.publication import pull_request as publish
    from rice_mlops.stages.connections import github_client, unusable_connection_reason

    if reason := unusable_connection_reason(settings.github_conn_id):
        raise AirflowSkipException(reason)
    if not settings.github_repository:
        raise AirflowSkipException("no repository: set RICE_GITHUB_REPOSITORY (the pull "
                                   "request goes only to the configured repository)")
    request = checked_request(settings, params)
    staged = staged_dir(settings, trained)
    champion = (registry.version_metrics(gate.champion_version)
                if gate.champion_version else None)
    github = github_client(settings.github_conn_id)
    repository = settings.github_repository
    texts = publish.pull_request_texts(
        version=gate.version, run_id=trained.run_id, dag_run_id=dag_run_id,
        metrics=json.loads((staged / "metrics.json").read_text()),
        test_accuracy=gate.test_accuracy, champion=champion, run_url=trained.run_url,
        fingerprint=trained.dataset_fingerprint, source_commit=request.source_commit,
        pusher=request.pusher, compare_url=request.compare_url,
        image=image.digest_ref if image else None,
        figure_url=(f"{publish.web_url(github.requester.base_url)}/{repository}/blob/"
                    f"{settings.pr_branch}/{settings.pr_path}/confusion_matrix.png?raw=true"),
        gate_reason=gate.reason, gate_table=gate.table)
    target = publish.Target(repository=repository, base=settings.pr_base,
                            branch=settings.pr_branch, path=settings.pr_path,
                            author_name=settings.pr_author, author_email=settings.pr_email)
    try:
        files = publish.artifact_files(staged, settings.pr_path)
        card = trained.model_card(settings)
        files[f"{settings.pr_path}/{card.name}"] = card.read_bytes()  # what the image holds
        with publish.answered(settings.github_conn_id, f"the pull request on {repository}"):
            return publish.publish(github.get_repo(repository), target, files,
                                   message=texts["message"], title=texts["title"],
                                   body=texts["body"])
    except (publish.GitHubAuthError, publish.GitHubRefused) as exc:
        raise AirflowFailException(str(exc)) from None
    finally:
        github.close()


def run_url(settings: PipelineSettings, dag_run_id: str, dag_id: str = DAG_ID) -> str:
    """The run's page in the Airflow UI (RICE_AIRFLOW_URL)."""
    from urllib.parse import quote

    return f"{settings.airflow_url}/dags/{dag_id}/runs/{quote(dag_run_id, safe='')}"


def commit_status(settings: PipelineSettings, request: RunRequest, dag_run_id: str,
                  state: str, description: str) -> None:
    """Post the run's state on its commit; nightly runs have none. Best effort: a status
    that cannot be posted is logged with the reason and never fails the run."""
    from rice_mlops.publication import pull_request as publish
    from rice_mlops.publication.commit_status import post_status
    from rice_mlops.stages.connections import github_client, unusable_connection_reason

    if not request.source_commit or len(request.source_commit) != 40:
        return
    if reason := unusable_connection_reason(settings.github_conn_id):
        log.info("commit status not posted: %s", reason)
        return
    repository = request.source_repository or settings.github_repository
    try:
        # Bounded well inside the task's timeout: a slow GitHub must not hold the run.
        github = github_client(settings.github_conn_id, timeout=10,
                                                attempts=2)
        try:
            with publish.answered(settings.github_conn_id, f"a commit status on {repository}"):
                post_status(github.get_repo(repository), request.source_commit, state,
                            description, run_url(settings, dag_run_id))
        finally:
            github.close()
        log.info("commit %s of %s: %s (%s)", request.source_commit[:12], repository, state,
                 description)
    except Exception as exc:  # noqa: BLE001 - the answer must not decide the run
        log.warning("commit status %s not posted on %s: %s", state, repository, exc)


def redeliver_failed_pushes(settings: PipelineSettings) -> list[int]:
    """Ask GitHub to redeliver every push delivery whose latest attempt failed."""
    from rice_mlops.publication import pull_request as publish
    from rice_mlops.publication.redelivery import find_hook, redeliver_failed
    from rice_mlops.stages.connections import github_client, unusable_connection_reason

    if reason := unusable_connection_reason(settings.github_conn_id):
        raise AirflowSkipException(reason)
    if not settings.github_repository:
        raise AirflowSkipException("no repository: set RICE_GITHUB_REPOSITORY")
    github = github_client(settings.github_conn_id)
    try:
        with publish.answered(settings.github_conn_id,
                              f"the webhook deliveries of {settings.github_repository}"):
            repo = github.get_repo(settings.github_repository)
            hook = find_hook(repo, settings.github_hook_id)
            if hook is None:
                raise AirflowSkipException(
                    f"no webhook of {settings.github_repository} points at /webhooks/github "
                    "(or set RICE_GITHUB_HOOK_ID)")
            return redeliver_failed(repo, hook)
    finally:
        github.close()
