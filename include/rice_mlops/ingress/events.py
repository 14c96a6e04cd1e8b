"""What a verified delivery asks for: nothing, or a DAG run with this conf."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rice_mlops.ingress.settings import ANY_REPOSITORY

_DELIVERY = re.compile(r"[A-Za-z0-9-]{1,100}")


@dataclass(frozen=True)
class Decision:
    trigger: bool
    status: int
    reason: str
    conf: dict = field(default_factory=dict)
    refused: bool = False  # worth a warning: a sender this receiver does not serve


def dag_run_id(conf: dict) -> str:
    """Deterministic per pushed content (repository and `after` commit), not per delivery:
    GitHub signs only the body, so a replayed body with a fresh X-GitHub-Delivery, a
    redelivery and a second webhook on the same repository all collide (409) on one run."""
    owner, name = conf["source_repository"].split("/", 1)
    # Airflow run ids allow [A-Za-z0-9_.~:+-]; GitHub owners have no dots, so "." splits.
    return f"github__{owner}.{name}__{conf['source_commit']}"


def valid_delivery(delivery: str | None) -> bool:
    return bool(delivery and _DELIVERY.fullmatch(delivery))


def decide(event: str, payload: dict, *, branch: str, allowed_repositories: frozenset[str]
           ) -> Decision:
    """Pure filtering of a verified, parsed delivery."""
    if event == "ping":
        return Decision(False, 200, "pong")
    if event != "push":
        return Decision(False, 202, f"event {event!r} is ignored; only push triggers")
    ref = payload.get("ref")
    repository = (payload.get("repository") or {}).get("full_name")
    if not isinstance(ref, str) or not isinstance(repository, str):
        return Decision(False, 400, "push payload lacks ref or repository.full_name",
                        refused=True)
    if ANY_REPOSITORY not in allowed_repositories and repository not in allowed_repositories:
        listed = ", ".join(sorted(allowed_repositories)) or "none"
        return Decision(False, 202, f"repository {repository} is not in the allow-list "
                                    f"({listed}; GITHUB_WEBHOOK_REPOSITORIES)", refused=True)
    if ref.startswith("refs/tags/"):
        return Decision(False, 202, f"tag push {ref} is ignored")
    if ref != f"refs/heads/{branch}":
        return Decision(False, 202, f"push to {ref} is ignored; only refs/heads/{branch} "
                                    "triggers")
    if payload.get("deleted"):
        return Decision(False, 202, f"push deleting {ref} is ignored")
    sha = payload.get("after")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{40}", sha):
        return Decision(False, 400, "push payload has no 40-hex commit in 'after'",
                        refused=True)
    pusher = payload.get("pusher") or {}
    conf = {"source_commit": sha, "source_ref": ref, "source_repository": repository,
            "pusher": str(pusher.get("name") or pusher.get("email") or "")[:255],
            "compare_url": str(payload.get("compare") or "")[:2048]}
    return Decision(True, 200, "push to the watched branch", conf)
