"""The webhook receiver's settings: read once from the API server's environment, then frozen.

Read with the package's readers and refused with its one error type (`rice_mlops.core.readers`);
every variable is described once in `rice_mlops.operations.settings_catalog`, from which the
webhook table of docs/configuration.md is generated. Every resource an unsigned caller can make
the receiver hold has a bound here (see `rice_mlops.ingress.limits`). Standard library only, like
the readers: the settings catalogue (and `scripts/settings-table`) imports it without the
webhook's own dependencies.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rice_mlops.core import readers as read
from rice_mlops.core.vocabulary import DAG_ID

ROTATION_GRACE_SECONDS = 3600.0  # how long the previous secret is still accepted
# GitHub leaves the secret to the user; below this an offline guess against one signed
# delivery becomes plausible. 32 characters is what `secrets.token_hex(16)` gives.
MIN_SECRET_LENGTH = 32


class SecretTooShort(read.SettingsError):
    """A configured secret is shorter than MIN_SECRET_LENGTH."""


def check_length(name: str, value: str | None) -> None:
    """Raise SecretTooShort naming `name` (never the value) unless `value` is unset or long
    enough."""
    if value and len(value) < MIN_SECRET_LENGTH:
        raise SecretTooShort(
            name, f"{name} is {len(value)} characters long",
            f"a secret of at least {MIN_SECRET_LENGTH} characters",
            "generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))', "
            "then set it here and on GitHub")


MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
BODY_DEADLINE_SECONDS = 10.0  # GitHub gives up after 10 s: a slower body is not GitHub
# Unsigned bytes held at once: at most this many times MAX_BODY_BYTES, counted as they arrive
# (never as declared), each body for at most BODY_DEADLINE_SECONDS. GitHub sends a
# repository's deliveries one by one.
MAX_UNVERIFIED = 8
# A body's first byte comes with its headers from GitHub (and through webhook-proxy, which
# streams it); then at least this rate on average. Slower: 408, before the full deadline.
FIRST_BYTE_SECONDS = 2.0
MIN_BODY_RATE = 16 * 1024  # bytes per second
DEFAULT_API_URL = "http://127.0.0.1:8080"
# How long a replaced secret stays valid (rice_mlops.ingress.secrets).
# How long a triggered push is answered as a duplicate without asking Airflow again
# (rice_mlops.ingress.recent).
RECENT_SECONDS = 120.0
# dagRun POSTs in flight at once. Each creates a run and its 22 task instances in the API server
# that also serves this receiver: 55-75 ms alone on an idle 2-core machine, but 20 at once took
# 1.0-1.9 s each (GIL and row locks), against 0.6-0.8 s at the median two at a time, with the
# same total (benchmarks/README.md, "Webhook triggers"). SQLite takes one.
TRIGGERS_AT_ONCE = 2
ANY_REPOSITORY = "*"  # GITHUB_WEBHOOK_REPOSITORIES=*: any repository that holds the secret
_REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")


def allowed_repositories(env: Mapping[str, str]) -> frozenset[str]:
    """GITHUB_WEBHOOK_REPOSITORIES, else the repository the pipeline publishes to
    (RICE_GITHUB_REPOSITORY): a secret shared with another repository's webhook must not run
    this pipeline, rollout included, unless the operator lists it."""
    listed = read.listed(env, "GITHUB_WEBHOOK_REPOSITORIES")
    name = "GITHUB_WEBHOOK_REPOSITORIES"
    if not listed:
        listed, name = tuple(filter(None, [read.text(env, "RICE_GITHUB_REPOSITORY")])), \
            "RICE_GITHUB_REPOSITORY"
    for entry in listed:
        if entry != ANY_REPOSITORY and not _REPOSITORY.fullmatch(entry):
            raise read.SettingsError(
                name, f"{name} holds {entry!r}, which is not a repository",
                f"comma-separated GitHub `owner/name`, or {ANY_REPOSITORY!r} for any "
                "repository", "change it")
    return frozenset(listed)


@dataclass(frozen=True)
class WebhookSettings:
    secret: str | None = None
    branch: str = "main"
    # Whose pushes trigger; empty: none. ANY_REPOSITORY must be asked for by name.
    repositories: frozenset[str] = frozenset()
    dag_id: str = DAG_ID
    api_url: str = DEFAULT_API_URL
    username: str = ""
    password: str = ""
    # On SQLite concurrent dagRun POSTs fail "database is locked": one at a time there.
    triggers_at_once: int = 1
    previous_secret: str | None = None
    secret_variable: str | None = None
    previous_ttl: float = ROTATION_GRACE_SECONDS
    body_deadline: float = BODY_DEADLINE_SECONDS
    max_unverified: int = MAX_UNVERIFIED
    first_byte_deadline: float = FIRST_BYTE_SECONDS
    min_body_rate: float = MIN_BODY_RATE
    recent_seconds: float = RECENT_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        env = os.environ if env is None else env
        database = read.text(env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite")
        return cls(
            secret=read.secret(env, "GITHUB_WEBHOOK_SECRET"),
            branch=read.text(env, "GITHUB_WEBHOOK_BRANCH", cls.branch),
            repositories=allowed_repositories(env),
            dag_id=read.text(env, "RICE_WEBHOOK_DAG_ID", cls.dag_id),
            api_url=read.text(env, "AIRFLOW_WEBHOOK_API_URL",
                              read.text(env, "AIRFLOW__API__BASE_URL", cls.api_url)),
            username=read.text(env, "AIRFLOW_WEBHOOK_USERNAME"),
            password=read.secret(env, "AIRFLOW_WEBHOOK_PASSWORD") or "",
            triggers_at_once=1 if database.startswith("sqlite") else TRIGGERS_AT_ONCE,
            previous_secret=read.secret(env, "GITHUB_WEBHOOK_SECRET_PREVIOUS"),
            secret_variable=read.text(env, "GITHUB_WEBHOOK_SECRET_VARIABLE") or None,
            previous_ttl=read.number(env, "GITHUB_WEBHOOK_PREVIOUS_SECRET_TTL",
                                     cls.previous_ttl, above=True),
            body_deadline=read.number(env, "GITHUB_WEBHOOK_BODY_TIMEOUT", cls.body_deadline,
                                      above=True),
            max_unverified=read.integer(env, "GITHUB_WEBHOOK_MAX_UNVERIFIED", cls.max_unverified,
                                        low=1),
            first_byte_deadline=read.number(env, "GITHUB_WEBHOOK_FIRST_BYTE_TIMEOUT",
                                            cls.first_byte_deadline, above=True),
            min_body_rate=read.number(env, "GITHUB_WEBHOOK_MIN_BODY_RATE", cls.min_body_rate,
                                      above=True),
            recent_seconds=read.number(env, "GITHUB_WEBHOOK_RECENT_SECONDS", cls.recent_seconds,
                                       above=True),
        )

    def check(self) -> None:
        """Refuse to start with a secret short enough to guess (the message names it)."""
        check_length("GITHUB_WEBHOOK_SECRET", self.secret)
        check_length("GITHUB_WEBHOOK_SECRET_PREVIOUS", self.previous_secret)
