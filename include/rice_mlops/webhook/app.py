"""The FastAPI app mounted on the Airflow API server at /webhooks (see plugins/).

Airflow does not authenticate plugin apps: the HMAC signature is the only gate, so it is
checked first, over the raw body, before anything else is parsed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rice_mlops.webhook.airflow_client import AirflowClient, AirflowRejected, AirflowUnavailable
from rice_mlops.webhook.events import dag_run_id, decide, valid_delivery
from rice_mlops.webhook.secrets import SecretUnavailable, WebhookSecrets
from rice_mlops.webhook.signature import SignatureError, verify

log = logging.getLogger("rice_mlops.webhook")

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB


@dataclass(frozen=True)
class Settings:
    secret: str | None
    branch: str
    repositories: frozenset[str]
    dag_id: str
    api_url: str
    username: str
    password: str
    serialize: bool
    previous_secret: str | None = None
    secret_variable: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        database = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "sqlite")
        repos = env.get("GITHUB_WEBHOOK_REPOSITORIES", "")
        return cls(
            secret=env.get("GITHUB_WEBHOOK_SECRET") or None,
            branch=env.get("GITHUB_WEBHOOK_BRANCH", "main"),
            repositories=frozenset(r.strip() for r in repos.split(",") if r.strip()),
            dag_id=env.get("RICE_WEBHOOK_DAG_ID", "rice_classifier_cicd"),
            api_url=env.get("AIRFLOW_WEBHOOK_API_URL")
            or env.get("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080"),
            username=env.get("AIRFLOW_WEBHOOK_USERNAME", ""),
            password=env.get("AIRFLOW_WEBHOOK_PASSWORD", ""),
            serialize=database.startswith("sqlite"),
            previous_secret=env.get("GITHUB_WEBHOOK_SECRET_PREVIOUS") or None,
            secret_variable=env.get("GITHUB_WEBHOOK_SECRET_VARIABLE") or None,
        )


def _answer(status: int, reason: str, **extra) -> JSONResponse:
    return JSONResponse({"status": status, "reason": reason, **extra}, status_code=status)


async def _read_body(request: Request) -> bytes | None:
    """The raw body, or None when it exceeds the limit (checked before reading it whole)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings | None = None, client: AirflowClient | None = None
               ) -> FastAPI:
    """The webhook app; `client` (tests pass a recording double) triggers the DAG runs."""
    settings = settings or Settings.from_env()
    secrets = WebhookSecrets(settings.secret, settings.previous_secret, settings.secret_variable)
    if not secrets.configured:
        log.warning("GITHUB_WEBHOOK_SECRET is not set (nor GITHUB_WEBHOOK_SECRET_VARIABLE): "
                    "every webhook delivery will be refused")
    client = client or AirflowClient(settings.api_url, settings.username, settings.password,
                                     serialize=settings.serialize)
    app = FastAPI(title="rice-mlops GitHub webhook", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.client = client

    @app.post("/github")
    async def github(request: Request) -> JSONResponse:
        try:
            keys = await secrets.current()
        except SecretUnavailable as exc:  # details stay in the log, not in the answer
            log.warning("delivery refused: %s", exc)
            return _answer(503, "webhook secret unavailable; redeliver later")
        if not keys:
            return _answer(403, "webhook secret not configured on the server; refusing")
        body = await _read_body(request)
        if body is None:
            return _answer(413, f"body larger than {MAX_BODY_BYTES} bytes")
        try:
            verify(keys, body, request.headers.get("x-hub-signature-256"))
        except SignatureError as exc:
            return _answer(exc.status, exc.reason)
        event = request.headers.get("x-github-event")
        delivery = request.headers.get("x-github-delivery")
        if not event:
            return _answer(400, "missing X-GitHub-Event header")
        if not valid_delivery(delivery):
            return _answer(400, "missing or malformed X-GitHub-Delivery header")
        if "json" not in request.headers.get("content-type", ""):
            return _answer(415, "Content-Type must be application/json (set it on GitHub)")
        try:
            payload = json.loads(body)
        except ValueError:
            return _answer(400, "body is not valid JSON")
        if not isinstance(payload, dict):
            return _answer(400, "body is not a JSON object")
        decision = decide(event, payload, branch=settings.branch,
                          allowed_repositories=settings.repositories)
        log.info("delivery %s (%s): %s", delivery, event, decision.reason)
        if not decision.trigger:
            return _answer(decision.status, decision.reason, delivery=delivery)
        run_id = dag_run_id(decision.conf)
        try:
            result = await client.trigger(settings.dag_id, run_id, decision.conf)
        except AirflowUnavailable as exc:
            log.warning("delivery %s not triggered: %s", delivery, exc)
            return _answer(503, f"{exc}; redeliver once Airflow is back", delivery=delivery)
        except AirflowRejected as exc:
            log.warning("delivery %s refused by Airflow: %s", delivery, exc)
            return _answer(422, f"Airflow refused the run: {exc.detail}", delivery=delivery)
        if result.created:
            return _answer(200, "DAG run triggered", delivery=delivery, dag_run_id=run_id)
        return _answer(200, "already triggered for this commit", delivery=delivery,
                       dag_run_id=run_id, duplicate=True)

    return app
