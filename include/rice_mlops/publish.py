"""Version the model artifacts in git through one idempotent GitHub pull request.

Like peter-evans/create-pull-request: one fixed branch is reset onto the base and updated, an
open pull request for it is edited (never duplicated), and nothing is committed when the base
branch already holds exactly these artifacts. The connection (token in the password, GitHub
Enterprise API URL in the host) is read through providers-github's GithubHook; the Git Data
and Pulls endpoints are called with httpx so that retries honour Retry-After and
X-RateLimit-Reset and failures name the connection, never the token.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from rice_mlops.vocabulary import DAG_ID

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
MAX_ATTEMPTS = 5
MAX_WAIT_SECONDS = 120


class GitHubAuthError(RuntimeError):
    """Credentials refused or permission missing: retrying cannot help."""


class GitHubUnavailable(RuntimeError):
    """GitHub kept failing (5xx, rate limit) after every retry."""


@dataclass(frozen=True)
class Target:
    repository: str  # owner/name
    base: str = "main"
    branch: str = "model/latest"
    path: str = "MLProject/model_artifact"
    author_name: str = "rice-mlops-bot"
    author_email: str = "rice-mlops-bot@users.noreply.github.com"


def unusable_connection_reason(conn_id: str) -> str | None:
    """Why the GitHub connection cannot open a pull request, or None when it can."""
    from rice_mlops.connections import optional_connection

    conn = optional_connection(conn_id)
    if conn is None:
        return (f"no Airflow connection {conn_id!r}: pull request not opened (add a GitHub "
                "connection with a token in its password to enable it)")
    if not conn.password:
        return (f"Airflow connection {conn_id!r} has no token in its password: pull request "
                "not opened (set GITHUB_TOKEN, or the connection's password, to enable it)")
    return None


def client_from_connection(conn_id: str, **limits) -> GitHubClient:
    """A client from the connection; `limits` (timeout, attempts) bound what it may hold."""
    from airflow.providers.github.hooks.github import GithubHook

    # Not GithubHook(...): its constructor raises a bare ValueError when the token is missing.
    conn = GithubHook.get_connection(conn_id)
    if not conn.password:
        raise GitHubAuthError(f"Airflow connection {conn_id!r} has no token in its password")
    host = (conn.host or "").rstrip("/")
    api_url = host if host.startswith("http") else (f"https://{host}" if host else DEFAULT_API_URL)
    return GitHubClient(api_url, conn.password, conn_id, **limits)


def web_url(api_url: str) -> str:
    """https://github.com for the public API, the Enterprise host for /api/v3 URLs."""
    if api_url.rstrip("/") == DEFAULT_API_URL:
        return "https://github.com"
    return api_url.rstrip("/").removesuffix("/api/v3")


class GitHubClient:
    def __init__(self, api_url: str, token: str, conn_id: str,
                 sleep: Callable[[float], None] = time.sleep, *, timeout: float = 30,
                 attempts: int = MAX_ATTEMPTS):
        self.api_url = api_url.rstrip("/")
        self.conn_id = conn_id
        self._sleep = sleep
        self._attempts = attempts
        self._http = httpx.Client(
            base_url=self.api_url, timeout=timeout,
            headers={"Authorization": f"Bearer {token}",
                     "Accept": "application/vnd.github+json",
                     "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "rice-mlops"})

    def _wait_for(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the response is final."""
        if response.status_code in (429, 403) and (
                "retry-after" in response.headers
                or response.headers.get("x-ratelimit-remaining") == "0"):
            if "retry-after" in response.headers:
                return float(response.headers["retry-after"])
            reset = float(response.headers.get("x-ratelimit-reset", time.time() + 60))
            return max(1.0, reset - time.time())
        if response.status_code >= 500:
            return float(2 ** attempt)
        return None

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        for attempt in range(self._attempts):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                wait, what = float(2 ** attempt), exc.__class__.__name__
            else:
                if response.status_code == 401:
                    raise GitHubAuthError(
                        f"GitHub refused the token of Airflow connection {self.conn_id!r} "
                        f"(401 Bad credentials on {method} {path}): put a valid token in the "
                        "connection's password")
                wait = self._wait_for(response, attempt)
                if wait is None:
                    if response.status_code == 403:
                        raise GitHubAuthError(
                            f"the token of Airflow connection {self.conn_id!r} lacks permission "
                            f"for {method} {path} (403): it needs Contents: write and "
                            "Pull requests: write on the repository")
                    return response
                what = f"HTTP {response.status_code}"
            if attempt == self._attempts - 1:
                break
            wait = min(wait, MAX_WAIT_SECONDS)
            log.warning("GitHub %s %s: %s; retrying in %.0fs", method, path, what, wait)
            self._sleep(wait)
        raise GitHubUnavailable(f"GitHub {method} {path} still failing after {self._attempts} "
                                f"attempts ({what})")

    def json(self, method: str, path: str, expect: tuple[int, ...] = (200, 201), **kwargs):
        response = self.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise RuntimeError(f"GitHub {method} {path} answered {response.status_code}: "
                               f"{response.text[:300]}")
        return response.json()


def git_blob_sha(data: bytes) -> str:
    """The object id git gives this content (`git hash-object`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's id


def artifact_files(directory: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(directory).as_posix()}": p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def publish(client: GitHubClient, target: Target, files: dict[str, bytes], *, message: str,
            title: str, body: str) -> dict:
    """Put exactly `files` under `target.path` on `target.branch` and open or edit its PR."""
    repo = f"/repos/{target.repository}"
    base = client.json("GET", f"{repo}/branches/{target.base}")
    base_sha, base_tree = base["commit"]["sha"], base["commit"]["commit"]["tree"]["sha"]
    tree = client.json("GET", f"{repo}/git/trees/{base_tree}", params={"recursive": "1"})
    prefix = target.path.rstrip("/") + "/"
    on_base = {e["path"]: e["sha"] for e in tree["tree"]
               if e["type"] == "blob" and e["path"].startswith(prefix)}
    wanted = {path: git_blob_sha(data) for path, data in files.items()}
    if on_base == wanted:
        log.info("%s on %s already holds these %d artifacts: no commit, no pull request",
                 target.path, target.base, len(wanted))
        return {"changed": False, "reason": f"{target.base} already holds these artifacts"}

    items = []
    for path, data in files.items():
        if on_base.get(path) != wanted[path]:
            blob = client.json("POST", f"{repo}/git/blobs", json={
                "content": base64.b64encode(data).decode(), "encoding": "base64"})
            items.append({"path": path, "mode": "100644", "type": "blob", "sha": blob["sha"]})
    items += [{"path": path, "mode": "100644", "type": "blob", "sha": None}
              for path in on_base if path not in wanted]
    new_tree = client.json("POST", f"{repo}/git/trees",
                           json={"base_tree": base_tree, "tree": items})["sha"]

    ref_path = f"{repo}/git/ref/heads/{target.branch}"
    existing = client.request("GET", ref_path)
    head = existing.json()["object"]["sha"] if existing.status_code == 200 else None
    commit_sha = None
    if head:
        current = client.json("GET", f"{repo}/git/commits/{head}")
        if current["tree"]["sha"] == new_tree and \
                [p["sha"] for p in current["parents"]] == [base_sha]:
            commit_sha = head  # a re-run after a failure: the branch is already right
    if commit_sha is None:
        commit_sha = client.json("POST", f"{repo}/git/commits", json={
            "message": message, "tree": new_tree, "parents": [base_sha],
            "author": {"name": target.author_name, "email": target.author_email}})["sha"]
        if head:
            client.json("PATCH", f"{repo}/git/refs/heads/{target.branch}",
                        json={"sha": commit_sha, "force": True})
        else:
            client.json("POST", f"{repo}/git/refs",
                        json={"ref": f"refs/heads/{target.branch}", "sha": commit_sha})

    owner = target.repository.split("/")[0]
    open_pulls = client.json("GET", f"{repo}/pulls", params={
        "state": "open", "head": f"{owner}:{target.branch}", "base": target.base})
    if open_pulls:
        pull = client.json("PATCH", f"{repo}/pulls/{open_pulls[0]['number']}",
                           json={"title": title, "body": body})
        created = False
    else:
        pull = client.json("POST", f"{repo}/pulls", json={
            "title": title, "head": target.branch, "base": target.base, "body": body})
        created = True
    log.info("%s pull request #%d (%s) on %s at %s", "opened" if created else "updated",
             pull["number"], pull["html_url"], target.branch, commit_sha[:12])
    return {"changed": True, "commit": commit_sha, "number": pull["number"],
            "pull_request": pull["html_url"], "created": created}


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
