"""A strict stand-in for the GitHub REST endpoints the pipeline calls through PyGithub
(providers-github's GithubHook): the pull request's Git Data and Pulls calls, commit statuses,
and the webhook's deliveries and redeliveries.

Backed by a real bare git repository: blobs, trees, commits and refs are made by git itself,
so what a branch holds is checked with `git`. Strict like GitHub, as its REST documentation
describes it: a missing or wrong token is 401 "Bad credentials", unknown JSON fields are 422,
an unknown route or method is 404; every object carries the `url` clients follow; lists are
paginated (`per_page`, `page`, a `Link` header with rel="next" and "last"); every answer has
the rate-limit headers (`X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Used`, `-Resource`).
Faults can be queued. Unlike GitHub, a commit status (and GET of a commit) is accepted for
any 40-hex sha, since the tests' pushes name commits this repository does not hold.
Test-only: product code never imports this module.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

FIELDS = {
    ("POST", "blobs"): {"content", "encoding"},
    ("POST", "trees"): {"base_tree", "tree"},
    ("POST", "commits"): {"message", "tree", "parents", "author", "committer"},
    ("POST", "refs"): {"ref", "sha"},
    ("PATCH", "ref"): {"sha", "force"},
    ("POST", "pulls"): {"title", "head", "base", "body", "draft", "maintainer_can_modify"},
    ("PATCH", "pull"): {"title", "body", "state", "base"},
    ("POST", "status"): {"state", "target_url", "description", "context"},
}
STATUS_STATES = {"error", "failure", "pending", "success"}
RATE_LIMIT = 5000


class GitHubDouble:
    def __init__(self, token: str, repository: str = "acme/rice"):
        self.token = token
        self.repository = repository
        self.root = Path(tempfile.mkdtemp(prefix="github-double-"))
        self.bare = self.root / "repo.git"
        self.git("init", "--bare", "--initial-branch=main", str(self.bare), bare=False)
        seed = self.root / "seed"
        subprocess.run(["git", "clone", "-q", str(self.bare), str(seed)], check=True,
                       capture_output=True)
        (seed / "README.md").write_text("rice\n")
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
        for args in (["add", "."], ["commit", "-qm", "init"], ["push", "-q", "origin", "main"]):
            subprocess.run(["git", *args], cwd=seed, env=env, check=True, capture_output=True)
        self.pulls: list[dict] = []
        self.statuses: list[dict] = []  # {"sha", "state", "target_url", "description", ...}
        # branch -> every commit it was set to, oldest first: a force-reset branch keeps no
        # history of its own, GitHub's pull request timeline does.
        self.branch_heads: dict[str, list[str]] = {}
        self.hooks: dict[int, dict] = {}  # id -> {"url", "secret"}
        self.deliveries: list[dict] = []  # GitHub's delivery records, newest last
        self._bodies: dict[str, tuple[str, bytes]] = {}  # guid -> (event, body)
        self.requests: list[tuple[str, str, dict | None, dict]] = []
        self.faults: list[tuple[int, dict]] = []
        self.used = 0  # requests counted against the rate limit
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()

    def fail_next(self, status: int, count: int = 1, headers: dict | None = None) -> None:
        self.faults += [(status, headers or {})] * count

    def git(self, *args: str, bare: bool = True, input: bytes | None = None,
            env: dict | None = None) -> str:
        prefix = ["git", f"--git-dir={self.bare}"] if bare else ["git"]
        result = subprocess.run([*prefix, *args], input=input, capture_output=True, check=True,
                                env={**os.environ, **(env or {})})
        return result.stdout.decode().strip()

    def branch_files(self, branch: str) -> dict[str, str]:
        """path -> blob sha on a branch, read with git itself."""
        out = self.git("ls-tree", "-r", branch)
        return {line.split("\t", 1)[1]: line.split()[2] for line in out.splitlines()}

    def commits_on(self, branch: str) -> list[str]:
        return self.git("rev-list", branch).splitlines()

    # -- webhooks: deliveries as GitHub makes them, and redeliveries ----------------------
    def add_hook(self, url: str, secret: str) -> int:
        hook_id = 1000 + len(self.hooks)
        self.hooks[hook_id] = {"url": url, "secret": secret}
        return hook_id

    def deliver(self, hook_id: int, event: str, payload: dict, guid: str | None = None,
                redelivery: bool = False) -> dict:
        """POST a signed delivery to the hook's URL and record what GitHub would record."""
        import datetime
        import hashlib
        import hmac
        import urllib.error
        import urllib.request
        import uuid

        hook = self.hooks[hook_id]
        guid = guid or str(uuid.uuid4())
        event, body = self._bodies.setdefault(guid, (event, json.dumps(payload).encode()))
        signature = "sha256=" + hmac.new(hook["secret"].encode(), body,
                                         hashlib.sha256).hexdigest()
        request = urllib.request.Request(hook["url"], data=body, method="POST", headers={
            "Content-Type": "application/json", "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid, "X-Hub-Signature-256": signature})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                code = response.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except OSError:
            code = 0  # no answer: GitHub records a failed delivery without a status code
        record = {"id": len(self.deliveries) + 1, "guid": guid, "event": event,
                  "status_code": code, "redelivery": redelivery, "action": None,
                  "delivered_at": datetime.datetime.now(datetime.UTC).isoformat(),
                  "status": "OK" if 200 <= code < 300 else "failed", "hook_id": hook_id}
        with self._lock:
            self.deliveries.append(record)
        return record

    def page(self, path: str, query: dict, items: list) -> tuple[list, dict]:
        """GitHub's pagination: `per_page` (default 30, at most 100) and `page` (from 1), and a
        Link header naming the next and last pages while there are more."""
        try:
            per_page = min(100, max(1, int(query.get("per_page", 30))))
            number = max(1, int(query.get("page", 1)))
        except ValueError:
            return [], {}
        last = max(1, -(-len(items) // per_page))
        links = []
        for rel, target in (("next", number + 1), ("last", last)):
            if number < last:
                link = urlencode({**query, "per_page": per_page, "page": target})
                links.append(f'<{self.url}{path}?{link}>; rel="{rel}"')
        chunk = items[(number - 1) * per_page:number * per_page]
        return chunk, ({"Link": ", ".join(links)} if links else {})

    # -- the endpoints --------------------------------------------------------------------
    def _tree_entries(self, sha: str) -> list[dict]:
        entries = []
        for line in self.git("ls-tree", "-r", "-t", sha).splitlines():
            meta, path = line.split("\t", 1)
            mode, kind, obj = meta.split()
            entries.append({"path": path, "mode": mode, "type": kind, "sha": obj})
        return entries

    @property
    def api(self) -> str:
        return f"{self.url}/repos/{self.repository}"

    def _commit(self, sha: str) -> dict:
        tree = self.git("rev-parse", f"{sha}^{{tree}}")
        parents = self.git("rev-list", "--parents", "-n", "1", sha).split()[1:]
        message = self.git("log", "-1", "--format=%B", sha)
        return {"sha": sha, "url": f"{self.api}/git/commits/{sha}",
                "tree": {"sha": tree, "url": f"{self.api}/git/trees/{tree}"},
                "parents": [{"sha": p, "url": f"{self.api}/git/commits/{p}"} for p in parents],
                "message": message}

    def _pull_doc(self, pull: dict) -> dict:
        """A pull request as GitHub answers it: head and base are objects."""
        owner = self.repository.split("/")[0]
        return {**pull, "head": {"ref": pull["head"], "label": f"{owner}:{pull['head']}"},
                "base": {"ref": pull["base"], "label": f"{owner}:{pull['base']}"}}

    def _ref(self, branch: str, sha: str) -> dict:
        return {"ref": f"refs/heads/{branch}", "url": f"{self.api}/git/refs/heads/{branch}",
                "object": {"sha": sha, "type": "commit",
                           "url": f"{self.api}/git/commits/{sha}"}}

    def route(self, method: str, path: str, query: dict, body: dict | None):
        repo = f"/repos/{self.repository}"
        if not path.startswith(repo + "/"):
            return 404, {"message": "Not Found"}
        rest = path[len(repo) + 1:]
        if method == "GET" and (m := re.fullmatch(r"branches/(.+)", rest)):
            try:
                sha = self.git("rev-parse", f"refs/heads/{m[1]}")
            except subprocess.CalledProcessError:
                return 404, {"message": "Branch not found"}
            return 200, {"name": m[1], "commit": {"sha": sha, "url": f"{self.api}/commits/{sha}",
                                                  "commit": self._commit(sha)}}
        if method == "GET" and (m := re.fullmatch(r"commits/([0-9a-f]{40})", rest)):
            return 200, {"sha": m[1], "url": f"{self.api}/commits/{m[1]}"}
        if method == "GET" and (m := re.fullmatch(r"git/trees/([0-9a-f]{40})", rest)):
            return 200, {"sha": m[1], "url": f"{self.api}/git/trees/{m[1]}",
                         "tree": self._tree_entries(m[1]), "truncated": False}
        if method == "GET" and (m := re.fullmatch(r"git/commits/([0-9a-f]{40})", rest)):
            return 200, self._commit(m[1])
        if method == "POST" and rest == "git/blobs":
            if body.get("encoding") != "base64":
                return 422, {"message": "encoding must be base64 here"}
            sha = self.git("hash-object", "-w", "--stdin",
                           input=base64.b64decode(body["content"]))
            return 201, {"sha": sha, "url": f"{self.api}/git/blobs/{sha}"}
        if method == "POST" and rest == "git/trees":
            index = self.root / f"index-{threading.get_ident()}"
            env = {"GIT_INDEX_FILE": str(index)}
            self.git("read-tree", body["base_tree"], env=env)
            for item in body["tree"]:
                if item["sha"] is None:
                    self.git("update-index", "--force-remove", item["path"], env=env)
                else:
                    self.git("update-index", "--add", "--cacheinfo",
                             f"{item['mode']},{item['sha']},{item['path']}", env=env)
            sha = self.git("write-tree", env=env)
            index.unlink()
            return 201, {"sha": sha, "url": f"{self.api}/git/trees/{sha}",
                         "tree": self._tree_entries(sha), "truncated": False}
        if method == "POST" and rest == "git/commits":
            author = body.get("author") or {}
            env = {"GIT_AUTHOR_NAME": author.get("name", "x"),
                   "GIT_AUTHOR_EMAIL": author.get("email", "x@x"),
                   "GIT_COMMITTER_NAME": author.get("name", "x"),
                   "GIT_COMMITTER_EMAIL": author.get("email", "x@x")}
            parents = [a for p in body["parents"] for a in ("-p", p)]
            sha = self.git("commit-tree", body["tree"], *parents, "-m", body["message"], env=env)
            return 201, self._commit(sha)
        if method == "GET" and (m := re.fullmatch(r"git/ref/heads/(.+)", rest)):
            try:
                sha = self.git("rev-parse", "--verify", f"refs/heads/{m[1]}")
            except subprocess.CalledProcessError:
                return 404, {"message": "Not Found"}
            return 200, self._ref(m[1], sha)
        if method == "POST" and rest == "git/refs":
            if not body["ref"].startswith("refs/heads/"):
                return 422, {"message": "Reference name is not well-formed"}
            try:
                self.git("update-ref", body["ref"], body["sha"], "0" * 40)
            except subprocess.CalledProcessError:
                return 422, {"message": "Reference already exists"}
            branch = body["ref"].removeprefix("refs/heads/")
            self.branch_heads.setdefault(branch, []).append(body["sha"])
            return 201, self._ref(branch, body["sha"])
        if method == "PATCH" and (m := re.fullmatch(r"git/refs/heads/(.+)", rest)):
            self.git("update-ref", f"refs/heads/{m[1]}", body["sha"])
            self.branch_heads.setdefault(m[1], []).append(body["sha"])
            return 200, self._ref(m[1], body["sha"])
        if method == "GET" and rest == "pulls":
            owner = self.repository.split("/")[0]
            found = [p for p in self.pulls if p["state"] == query.get("state", "open")
                     and f"{owner}:{p['head']}" == query.get("head", f"{owner}:{p['head']}")
                     and p["base"] == query.get("base", p["base"])]
            return 200, [self._pull_doc(p) for p in found]
        if method == "POST" and rest == "pulls":
            if any(p["head"] == body["head"] and p["state"] == "open" for p in self.pulls):
                return 422, {"message": "A pull request already exists"}
            number = len(self.pulls) + 1
            pull = {"number": number, "state": "open", "head": body["head"],
                    "base": body["base"], "title": body["title"], "body": body.get("body"),
                    "url": f"{self.api}/pulls/{number}",
                    # The web page, on the double's host as on a GitHub Enterprise server's.
                    "html_url": f"{self.url}/{self.repository}/pull/{number}"}
            self.pulls.append(pull)
            return 201, self._pull_doc(pull)
        if method == "POST" and (m := re.fullmatch(r"statuses/([0-9a-f]{40})", rest)):
            # GitHub: 422 for an unknown state or a description over 140 characters.
            if body.get("state") not in STATUS_STATES:
                return 422, {"message": "Validation Failed", "errors": ["state"]}
            if len(body.get("description") or "") > 140:
                return 422, {"message": "Validation Failed", "errors": ["description"]}
            status = {"sha": m[1], "context": "default", **body}
            self.statuses.append(status)
            return 201, {"id": len(self.statuses), **status}
        if method == "GET" and rest == "hooks":
            return 200, [{"id": i, "active": True, "events": ["push"], "name": "web",
                          "url": f"{self.api}/hooks/{i}",
                          "config": {"url": h["url"], "content_type": "json"}}
                         for i, h in self.hooks.items()]
        if method == "GET" and (m := re.fullmatch(r"hooks/(\d+)/deliveries", rest)):
            if int(m[1]) not in self.hooks:
                return 404, {"message": "Not Found"}
            found = [d for d in self.deliveries if d["hook_id"] == int(m[1])]
            return 200, list(reversed(found))
        if method == "POST" and (m := re.fullmatch(r"hooks/(\d+)/deliveries/(\d+)/attempts",
                                                   rest)):
            original = next((d for d in self.deliveries if d["id"] == int(m[2])
                             and d["hook_id"] == int(m[1])), None)
            if original is None:
                return 404, {"message": "Not Found"}
            # Redelivered after this answer, as GitHub does (and outside the request lock).
            threading.Thread(target=self.deliver, daemon=True, args=(
                int(m[1]), original["event"], None, original["guid"], True)).start()
            return 202, {}
        if method == "PATCH" and (m := re.fullmatch(r"pulls/(\d+)", rest)):
            pull = next((p for p in self.pulls if p["number"] == int(m[1])), None)
            if pull is None:
                return 404, {"message": "Not Found"}
            pull.update({k: v for k, v in body.items() if k in ("title", "body", "state")})
            return 200, self._pull_doc(pull)
        return 404, {"message": "Not Found"}

    def web_page(self, path: str) -> str | None:
        """The pull request's page a browser opens from its `html_url` (GitHub's web pages
        are not the API: no token, HTML); None for any other path."""
        match = re.fullmatch(rf"/{re.escape(self.repository)}/pull/(\d+)", path)
        pull = next((p for p in self.pulls if match and p["number"] == int(match[1])), None)
        if pull is None:
            return None
        files = "".join(f"<li>{html.escape(name)}</li>"
                        for name in sorted(self.branch_files(pull["head"])))
        return (f"<!doctype html><title>{html.escape(pull['title'])} · Pull Request "
                f"#{pull['number']} · {html.escape(self.repository)}</title>"
                f"<h1>{html.escape(pull['title'])} #{pull['number']}</h1>"
                f"<p>{html.escape(pull['state'])}: wants to merge {html.escape(pull['head'])} "
                f"into {html.escape(pull['base'])}</p><ul>{files}</ul>")

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, payload, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                double.used += 1
                for key, value in {"X-RateLimit-Limit": str(RATE_LIMIT),
                                   "X-RateLimit-Remaining": str(max(0, RATE_LIMIT - double.used)),
                                   "X-RateLimit-Reset": str(int(time.time()) + 3600),
                                   "X-RateLimit-Used": str(double.used),
                                   "X-RateLimit-Resource": "core", **(headers or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _any(self):
                url = urlparse(self.path)
                if self.command == "GET" and not url.path.startswith("/repos/"):
                    with double._lock:
                        page = double.web_page(url.path)
                    if page is not None:
                        data = page.encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "text/html; charset=utf-8")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return None
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with double._lock:
                    double.requests.append((self.command, url.path, body, dict(self.headers)))
                    if self.headers.get("Authorization") not in (
                            f"Bearer {double.token}", f"token {double.token}"):
                        return self._reply(401, {"message": "Bad credentials"})
                    if double.faults:
                        status, headers = double.faults.pop(0)
                        return self._reply(status, {"message": "injected fault"}, headers)
                    kind = ("pull" if re.search(r"/pulls/\d+$", url.path) else
                            "status" if "/statuses/" in url.path else
                            "ref" if "/git/refs/" in url.path else url.path.rsplit("/", 1)[-1])
                    allowed = FIELDS.get((self.command, kind))
                    if body is not None and allowed is not None and set(body) - allowed:
                        return self._reply(422, {"message": "Invalid request", "errors": sorted(
                            set(body) - allowed)})
                    try:
                        status, payload = double.route(self.command, url.path, query, body)
                    except (KeyError, TypeError, subprocess.CalledProcessError) as exc:
                        status, payload = 422, {"message": f"Validation Failed: {exc}"}
                    headers = {}
                    if isinstance(payload, list):  # one page of it, and where the others are
                        payload, headers = double.page(url.path, query, payload)
                return self._reply(status, payload, headers)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

        return Handler
