"""Signed pushes to the compose stack's webhook, as GitHub sends them."""

from __future__ import annotations

import time

import httpx

from tests.helpers.compose_project import ComposeStack

REPOSITORY = "local/rice-mlops"  # the stack's GITHUB_WEBHOOK_REPOSITORIES


def deliver(stack: ComposeStack, commit: str, delivery: str | None = None,
            client: httpx.Client | None = None) -> tuple[str, str, float, str]:
    """A signed push of `commit` to the stack's webhook, as GitHub sends it (with `delivery`
    as its X-GitHub-Delivery, for a redelivery): (commit, status or "no answer: ...", seconds,
    the run the answer names)."""
    from rice_mlops.ingress.send import push_payload, send

    start = time.perf_counter()
    try:
        answer = send(stack.webhook, stack.env["GITHUB_WEBHOOK_SECRET"],
                      push_payload("refs/heads/main", commit, REPOSITORY), delivery=delivery,
                      timeout=10, client=client)
        run_id = answer.json().get("dag_run_id", "") if answer.status_code < 300 else ""
        return commit, str(answer.status_code), time.perf_counter() - start, run_id
    except (httpx.HTTPError, ValueError) as exc:  # refused or reset while the server is down
        return commit, f"no answer: {type(exc).__name__}", time.perf_counter() - start, ""
