"""The pull-request publication, through providers-github's GithubHook and PyGithub, against a
strict GitHub double backed by a real git repo."""

from __future__ import annotations

import json
import logging
import os
from unittest import mock

import pytest

from rice_mlops.publication.pull_request import (
    GitHubAuthError,
    Target,
    answered,
    git_blob_sha,
    publish,
    render_body,
)
from rice_mlops.stages.connections import github_client
from tests.helpers.github_double import GitHubDouble

TOKEN = "ghp_" + "s3cr3tT0k3nValue" * 2


@pytest.fixture
def double():
    github = GitHubDouble(TOKEN)
    yield github
    github.close()


def _files(version: str) -> dict[str, bytes]:
    root = "MLProject/model_artifact"
    return {f"{root}/MLmodel": f"run_id: {version}\n".encode(),
            f"{root}/data/model.keras": bytes(range(256)) * 40 + version.encode(),
            f"{root}/model.tflite": b"TFL3" + version.encode() * 100,
            f"{root}/labels.json": b'{"classes": ["Arborio"]}',
            f"{root}/metrics.json": f'{{"test_accuracy": 0.99, "v": "{version}"}}'.encode(),
            f"{root}/confusion_matrix.png": b"\x89PNG" + version.encode(),
            f"{root}/MANIFEST.sha256": f"abc  MLmodel {version}\n".encode()}


def _connection(double, token=TOKEN) -> dict:
    """The GitHub connection as Airflow reads it from the environment: the API URL in the host
    (as for GitHub Enterprise), the token in the password."""
    return {"AIRFLOW_CONN_GITHUB_DEFAULT": json.dumps(
        {"conn_type": "github", "host": double.url, "password": token})}


def _publish(double, files, *, body="body", token=TOKEN):
    with mock.patch.dict(os.environ, _connection(double, token)):
        github = github_client("github_default", attempts=3)
    with github, answered("github_default", "the pull request"):
        return publish(github.get_repo("acme/rice"), Target(repository="acme/rice"), files,
                       message="model v", title="Update model", body=body)


def test_first_run_creates_branch_and_one_pull_request(double):
    files = _files("1")
    result = _publish(double, files)
    assert result["changed"] and result["created"] and result["number"] == 1
    on_branch = double.branch_files("model/latest")
    artifacts = {p: s for p, s in on_branch.items() if p.startswith("MLProject/")}
    assert artifacts == {path: git_blob_sha(data) for path, data in files.items()}
    assert "README.md" in on_branch  # the rest of the base is untouched
    assert len([p for p in double.pulls if p["state"] == "open"]) == 1
    main = double.commits_on("main")
    assert double.commits_on("model/latest")[1:] == main  # one commit on top of the base
    author = double.git("log", "-1", "--format=%an <%ae>", "model/latest")
    assert author == "rice-mlops-bot <rice-mlops-bot@users.noreply.github.com>"


def test_second_run_updates_the_same_pull_request(double):
    _publish(double, _files("1"), body="first")
    result = _publish(double, {k: v for k, v in _files("2").items()
                               if not k.endswith("data/model.keras")}, body="second")
    assert result["changed"] and not result["created"] and result["number"] == 1
    assert len(double.pulls) == 1 and double.pulls[0]["body"] == "second"
    files = double.branch_files("model/latest")
    assert not any(p.endswith("data/model.keras") for p in files)  # stale file removed
    assert len(double.commits_on("model/latest")) == len(double.commits_on("main")) + 1


def test_rerun_with_the_same_artifacts_makes_no_new_commit(double):
    first = _publish(double, _files("1"))
    again = _publish(double, _files("1"))
    assert again["commit"] == first["commit"]
    assert len(double.commits_on("model/latest")) == len(double.commits_on("main")) + 1
    assert len(double.pulls) == 1


def test_artifacts_equal_to_base_mean_no_commit_and_no_pull_request(double, caplog):
    files = _files("1")
    _publish(double, files)
    double.git("update-ref", "refs/heads/main", double.git("rev-parse", "model/latest"))
    double.pulls.clear()
    writes_before = sum(1 for m, *_ in double.requests if m != "GET")
    with caplog.at_level(logging.INFO):
        result = _publish(double, files)
    assert result == {"changed": False, "reason": "main already holds these artifacts"}
    assert double.pulls == []
    assert sum(1 for m, *_ in double.requests if m != "GET") == writes_before
    assert "no commit, no pull request" in caplog.text


def test_transient_502_is_retried(double):
    double.fail_next(502)
    double.fail_next(403, headers={"Retry-After": "1"})  # secondary rate limit
    result = _publish(double, _files("1"))
    assert result["created"]
    assert len(double.pulls) == 1


def test_401_fails_clearly_with_nothing_written(double):
    with pytest.raises(GitHubAuthError) as caught:
        _publish(double, _files("1"), token="ghp_wrong")
    assert "Airflow connection 'github_default'" in str(caught.value)
    assert "ghp_wrong" not in str(caught.value)
    with pytest.raises(Exception):  # noqa: B017 - git itself: the branch does not exist
        double.git("rev-parse", "--verify", "refs/heads/model/latest")
    assert double.pulls == []


def test_missing_permission_names_the_permission(double):
    double.fail_next(403)
    with pytest.raises(GitHubAuthError, match="Contents: write and Pull requests: write"):
        _publish(double, _files("1"))


def test_a_list_is_read_page_by_page_as_github_serves_it(double):
    """The double paginates like GitHub (Link rel="next"), and PyGithub follows it."""
    for index in range(3):
        double.pulls.append({"number": index + 1, "state": "open", "head": f"b{index}",
                             "base": "main", "title": "t", "body": "", "html_url": "h",
                             "url": f"{double.api}/pulls/{index + 1}"})
    with mock.patch.dict(os.environ, _connection(double)):
        github = github_client("github_default")
    with github:
        github.per_page = 1
        pulls = github.get_repo("acme/rice").get_pulls(state="open")
        assert [pull.number for pull in pulls] == [1, 2, 3]
    pages = [r for r in double.requests if r[1] == "/repos/acme/rice/pulls"]
    assert len(pages) >= 3


def test_the_double_is_strict():
    import httpx

    github = GitHubDouble(TOKEN)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{github.url}/repos/acme/rice/branches/main").status_code == 401
        bad = httpx.post(f"{github.url}/repos/acme/rice/git/refs", headers=headers,
                         json={"ref": "refs/heads/x", "sha": "0" * 40, "surprise": 1})
        assert bad.status_code == 422
        assert httpx.delete(f"{github.url}/repos/acme/rice/pulls",
                            headers=headers).status_code == 404
        listed = httpx.get(f"{github.url}/repos/acme/rice/pulls", headers=headers)
        assert int(listed.headers["X-RateLimit-Remaining"]) < 5000
        assert listed.headers["X-RateLimit-Resource"] == "core"
    finally:
        github.close()


def test_body_has_the_metrics_table_links_and_confusion_matrix():
    body = render_body(
        {"test_accuracy": 0.995, "test_macro_f1": 0.994,
         "per_class": {"Arborio": {"recall": 0.99}, "Basmati": {"recall": 1.0}}},
        {"version": "3", "test_accuracy": 0.99, "test_macro_f1": 0.989,
         "per_class_recall": {"Arborio": 0.98}},
        run_url="http://mlflow/#/runs/abc", fingerprint="sha256:ff", source_commit="9fceb02",
        image="reg/rice@sha256:1", confusion_matrix_url="https://x/blob/model/latest/cm.png",
        gate_reason="passed")
    assert "| test accuracy | 99.50 % | 99.00 % |" in body
    assert "| recall Arborio | 99.00 % | 98.00 % |" in body
    assert "champion v3" in body and "http://mlflow/#/runs/abc" in body
    assert "`sha256:ff`" in body and "`9fceb02`" in body and "reg/rice@sha256:1" in body
    assert "![confusion matrix](https://x/blob/model/latest/cm.png)" in body


def test_a_commit_status_and_a_redelivery_go_through_pygithub(double):
    """The two other things the pipeline asks of GitHub: a status on the pushed commit, and
    (the redelivery DAG) a redelivery of each push whose newest delivery failed."""
    from rice_mlops.publication.commit_status import post_status
    from rice_mlops.publication.redelivery import find_hook, redeliver_failed

    hook_id = double.add_hook("http://127.0.0.1:9/webhooks/github", "s" * 32)  # nobody there
    failed = double.deliver(hook_id, "push", {"ref": "refs/heads/main"})
    assert failed["status_code"] == 0
    with mock.patch.dict(os.environ, _connection(double)):
        github = github_client("github_default", attempts=2)
    with github, answered("github_default", "test"):
        repo = github.get_repo("acme/rice")
        post_status(repo, "a" * 40, "pending", "training and gating", "http://airflow/runs/x")
        assert find_hook(repo) == hook_id
        assert redeliver_failed(repo, hook_id) == [failed["id"]]
    [status] = double.statuses
    assert (status["sha"], status["state"], status["context"]) == (
        "a" * 40, "pending", "rice-mlops/pipeline")
    attempts = [r for r in double.requests if r[0] == "POST" and r[1].endswith("/attempts")]
    assert [r[1] for r in attempts] == [
        f"/repos/acme/rice/hooks/{hook_id}/deliveries/{failed['id']}/attempts"]
