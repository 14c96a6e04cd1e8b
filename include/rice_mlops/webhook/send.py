"""Send a correctly signed GitHub push (or ping) delivery, for the demo and for set-ups."""

from __future__ import annotations

import json
import uuid

import httpx

from rice_mlops.webhook.signature import sign


def push_payload(ref: str, sha: str, repository: str, pusher: str = "rice-mlops") -> dict:
    owner = repository.split("/")[0]
    return {
        "ref": ref, "before": "0" * 40, "after": sha, "created": False, "deleted": False,
        "forced": False, "compare": f"https://github.com/{repository}/compare/{sha[:12]}",
        "repository": {"full_name": repository, "name": repository.split("/")[-1],
                       "owner": {"login": owner}},
        "pusher": {"name": pusher, "email": f"{pusher}@users.noreply.github.com"},
        "head_commit": {"id": sha, "message": "rice-mlops webhook send"},
    }


def send(url: str, secret: str, payload: dict, event: str = "push",
         delivery: str | None = None, timeout: float = 10.0) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "X-Hub-Signature-256": sign(secret, body),
               "User-Agent": "GitHub-Hookshot/rice-mlops"}
    return httpx.post(url, content=body, headers=headers, timeout=timeout)
