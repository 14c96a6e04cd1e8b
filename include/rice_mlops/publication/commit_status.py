"""The run's answer on the pushed commit: a GitHub commit status through the GitHub
connection, under one stable context so each run replaces its own earlier state."""

from __future__ import annotations

from rice_mlops.publication.outcome import STATUS_CONTEXT

STATES = ("pending", "success", "failure", "error")


def status_body(state: str, description: str, target_url: str) -> dict:
    if state not in STATES:
        raise ValueError(f"commit status state must be one of {STATES}, got {state!r}")
    return {"state": state, "description": description[:140], "target_url": target_url,
            "context": STATUS_CONTEXT}


def post_status(repo, sha: str, state: str, description: str, target_url: str) -> None:
    """POST /repos/{owner}/{name}/statuses/{sha} through PyGithub; `repo` is its
    Repository."""
    repo.get_commit(sha).create_status(**status_body(state, description, target_url))
