"""Version the model artifacts in git through one idempotent GitHub pull request.

Like peter-evans/create-pull-request: one fixed branch is reset onto the base and updated, an
open pull request for it is edited (never duplicated), and nothing is committed when the base
branch already holds exactly these artifacts. GitHub is reached through providers-github:
`GithubHook(...).get_conn()` reads the connection (token in the password, or a GitHub App in
its extras; GitHub Enterprise API URL in the host) and gives PyGithub's client
(`rice_mlops.stages.connections.github_client`), re-bound with this module's bounds (timeout,
attempts, waits) so that retries honour Retry-After and the rate-limit reset; this module works
on that client, and its failures name the connection, never the token.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rice_mlops.core.vocabulary import DAG_ID

if TYPE_CHECKING:
    from github.Repository import Repository

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
MAX_ATTEMPTS = 5
MAX_WAIT_SECONDS = 120


class GitHubAuthError(RuntimeError):
    """Credentials refused or permission missing: retrying cannot help."""


class GitHubUnavailable(RuntimeError):
    """GitHub kept failing (5xx, rate limit) after every retry."""


class GitHubRefused(RuntimeError):
    """GitHub refused the request (4xx other than credentials): the message says why."""


@dataclass(frozen=True)
class Target:
    repository: str  # owner/name
    base: str = "main"
    branch: str = "model/latest"
    path: str = "MLProject/model_artifact"
    author_name: str = "rice-mlops-bot"
    author_email: str = "rice-mlops-bot@users.noreply.github.com"



def retry_policy(attempts: int):
    """PyGithub's retry (403 only with Retry-After or a rate-limit body) over every method,
    5xx and 429 too, each wait at most MAX_WAIT_SECONDS: a rate limit that resets later fails
    the attempt (the task's own retries come later) rather than holding a worker for an hour."""
    from github import GithubRetry

    return GithubRetry(total=attempts - 1, backoff_factor=1, backoff_max=MAX_WAIT_SECONDS,
                       max_rate_limit_wait=MAX_WAIT_SECONDS, secondary_rate_wait=MAX_WAIT_SECONDS,
                       status_forcelist=[429, *range(500, 600)],
                       allowed_methods=frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"}))



@contextmanager
def answered(conn_id: str, what: str) -> Iterator[None]:
    """PyGithub's and requests' errors as this module's, naming the connection and the call
    (`what`), never the token."""
    import requests
    from github import BadCredentialsException, GithubException, RateLimitExceededException

    try:
        yield
    except BadCredentialsException:
        raise GitHubAuthError(
            f"GitHub refused the token of Airflow connection {conn_id!r} (401 Bad credentials "
            f"on {what}): put a valid token in the connection's password") from None
    except RateLimitExceededException as exc:
        raise GitHubUnavailable(f"GitHub {what}: rate limited ({exc.status}) beyond "
                                f"{MAX_WAIT_SECONDS} s of waiting") from None
    except GithubException as exc:
        message = (exc.data or {}).get("message", "") if isinstance(exc.data, dict) else ""
        if exc.status == 401:
            raise GitHubAuthError(f"GitHub refused the token of Airflow connection {conn_id!r} "
                                  f"(401 on {what})") from None
        if exc.status == 403:
            raise GitHubAuthError(
                f"the token of Airflow connection {conn_id!r} lacks permission for {what} "
                "(403): it needs Contents: write and Pull requests: write on the repository"
            ) from None
        if exc.status >= 500 or exc.status == 429:
            raise GitHubUnavailable(f"GitHub {what} still failing after every attempt "
                                    f"(HTTP {exc.status})") from None
        raise GitHubRefused(f"GitHub {what} answered {exc.status}: {message[:300]}") from None
    except requests.RequestException as exc:
        raise GitHubUnavailable(f"GitHub {what} still failing after every attempt "
                                f"({exc.__class__.__name__})") from None


def web_url(api_url: str) -> str:
    """https://github.com for the public API, the Enterprise host for /api/v3 URLs."""
    if api_url.rstrip("/") == DEFAULT_API_URL:
        return "https://github.com"
    return api_url.rstrip("/").removesuffix("/api/v3")


def git_blob_sha(data: bytes) -> str:
    """The object id git gives this content (`git hash-object`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


def artifact_files(directory: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(directory).as_posix()}": p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def publish(repo: Repository, target: Target, files: dict[str, bytes], *, message: str,
            title: str, body: str) -> dict:
    """Put exactly `files` under `target.path` on `target.branch` and open or edit its PR.

    `repo` is PyGithub's repository (`stages.connections.github_client(...).get_repo(...)`); call it
    inside `answered(...)`, which names what failed."""
    from github import InputGitAuthor, InputGitTreeElement, UnknownObjectException

    base = repo.get_branch(target.base)
    base_sha = base.commit.sha
    base_tree = repo.get_git_tree(base.commit.commit.tree.sha, recursive=True)
    prefix = target.path.rstrip("/") + "/"
    on_base = {e.path: e.sha for e in base_tree.tree
               if e.type == "blob" and e.path.startswith(prefix)}
    wanted = {path: git_blob_sha(data) for path, data in files.items()}
    if on_base == wanted:
        log.info("%s on %s already holds these %d artifacts: no commit, no pull request",
                 target.path, target.base, len(wanted))
        return {"changed": False, "reason": f"{target.base} already holds these artifacts"}

    items = []
    for path, data in files.items():
        if on_base.get(path) != wanted[path]:
            blob = repo.create_git_blob(base64.b64encode(data).decode(), "base64")
            items.append(InputGitTreeElement(path, "100644", "blob", sha=blob.sha))
    items += [InputGitTreeElement(path, "100644", "blob", sha=None)
              for path in on_base if path not in wanted]
    new_tree = repo.create_git_tree(items, base_tree)

    try:  # lazy: the ref is read (and found missing) on first use
        ref = repo.get_git_ref(f"heads/{target.branch}")
        head = ref.object.sha
    except UnknownObjectException:
        ref = head = None
    commit_sha = None
    if ref is not None:
        current = repo.get_git_commit(head)
        if current.tree.sha == new_tree.sha and [p.sha for p in current.parents] == [base_sha]:
            commit_sha = current.sha  # a re-run after a failure: the branch is already right
    if commit_sha is None:
        commit = repo.create_git_commit(
            message, new_tree, [repo.get_git_commit(base_sha)],
            author=InputGitAuthor(target.author_name, target.author_email))
        commit_sha = commit.sha
        if ref is not None:
            ref.edit(commit_sha, force=True)
        else:
            repo.create_git_ref(f"refs/heads/{target.branch}", commit_sha)

    owner = target.repository.split("/")[0]
    pull = next(iter(repo.get_pulls(state="open", head=f"{owner}:{target.branch}",
                                    base=target.base)), None)
    if pull is not None:
        pull.edit(title=title, body=body)
        created = False
    else:
        pull = repo.create_pull(base=target.base, head=target.branch, title=title, body=body)
        created = True
    log.info("%s pull request #%d (%s) on %s at %s", "opened" if created else "updated",
             pull.number, pull.html_url, target.branch, commit_sha[:12])
    return {"changed": True, "commit": commit_sha, "number": pull.number,
            "pull_request": pull.html_url, "created": created}


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def render_body(new: dict, champion: dict | None, *, run_url: str, fingerprint: str,
                source_commit: str | None, image: str | None, confusion_matrix_url: str,
                gate_reason: str, pusher: str = "", compare_url: str = "",
                gate_table: str = "", evidence: str = "") -> str:
    """The pull request body: the new model against the champion, and where it came from."""
    champion = champion or {}
    rows = [("test accuracy", new.get("test_accuracy"), champion.get("test_accuracy")),
            ("macro F1", new.get("test_macro_f1"), champion.get("test_macro_f1"))]
    for cls, values in sorted((new.get("per_class") or {}).items()):
        rows.append((f"recall {cls}", values.get("recall"),
                     (champion.get("per_class_recall") or {}).get(cls)))
    label = f"champion v{champion['version']}" if champion.get("version") else "champion"
    table = "\n".join(f"| {name} | {_pct(mine)} | {_pct(theirs)} |" for name, mine, theirs in rows)
    return f"""## New rice classifier

| metric | this model | {label} |
|---|---|---|
{table}

- **MLflow run:** {run_url}
- **Dataset fingerprint:** `{fingerprint}`
- **Source commit:** {f"`{source_commit}`" if source_commit else "— (nightly run)"}
- **Pushed by:** {_inline(pusher) or "—"}{f" ([changes]({compare_url}))" if compare_url else ""}
- **Serving image:** {f"`{image}`" if image else "— (not pushed in this run)"}
- **Quality gate:** {gate_reason}

{f"### Quality gate{chr(10)}{chr(10)}{gate_table}{chr(10)}" if gate_table else ""}
{evidence}
![confusion matrix]({confusion_matrix_url})

<sub>Opened by the `{DAG_ID}` DAG; this branch is reset on every run.</sub>
"""


def _inline(text: str) -> str:
    """Untrusted text (a pusher's name) as inline code that cannot break out of it."""
    cleaned = " ".join(text.replace("`", "'").split())[:100]
    return f"`{cleaned}`" if cleaned else ""


def pull_request_texts(*, version: str, run_id: str, dag_run_id: str, metrics: dict,
                       test_accuracy: float, champion: dict | None, run_url: str,
                       fingerprint: str, source_commit: str, pusher: str, compare_url: str,
                       image: str | None, figure_url: str, gate_reason: str,
                       gate_table: str = "", evidence: str = "") -> dict[str, str]:
    """Title, commit message and body of the model pull request."""
    message = (f"Update rice classifier v{version} from MLflow run {run_id}\n\n"
               f"Source commit: {source_commit or 'none (nightly run)'}\n"
               f"Airflow run: {dag_run_id}")
    body = render_body(metrics, champion, run_url=run_url, fingerprint=fingerprint,
                       source_commit=source_commit or None, image=image,
                       confusion_matrix_url=figure_url, gate_reason=gate_reason,
                       pusher=pusher, compare_url=compare_url, gate_table=gate_table,
                       evidence=evidence)
    return {"title": f"Rice classifier v{version}: test accuracy {test_accuracy:.4f}",
            "message": message, "body": body}
