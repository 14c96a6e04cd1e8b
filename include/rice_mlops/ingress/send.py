"""Send a correctly signed GitHub push (or ping) delivery, for the demo and for set-ups."""

from __future__ import annotations

import json
import uuid

import httpx

from rice_mlops.ingress.signature import sign


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
         delivery: str | None = None, timeout: float = 10.0,
         client: httpx.Client | None = None) -> httpx.Response:
    """POST one signed delivery; through `client` when given. A load driver passes one: a new
    httpx client per call rebuilds its TLS context, tens of milliseconds of the sender's CPU
    that a loaded machine turned into seconds of measured "latency" (benchmarks/README.md)."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event,
               "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
               "X-Hub-Signature-256": sign(secret, body),
               "User-Agent": "GitHub-Hookshot/rice-mlops"}
    if client is not None:
        return client.post(url, content=body, headers=headers, timeout=timeout)
    return httpx.post(url, content=body, headers=headers, timeout=timeout)
