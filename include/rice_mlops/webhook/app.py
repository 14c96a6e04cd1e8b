"""The FastAPI app mounted on the Airflow API server at /webhooks (see plugins/).

Airflow does not authenticate plugin apps: the HMAC signature is the only gate, so it is
checked first, over the raw body, before anything else is parsed. Until then the sender is
anonymous, so reading the body is bounded (rice_mlops.webhook.limits), and what goes back to
the caller is a generic reason: Airflow's own answers stay in the log.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rice_mlops.webhook.airflow_client import AirflowClient, AirflowRejected, AirflowUnavailable
from rice_mlops.webhook.events import dag_run_id, decide, valid_delivery
from rice_mlops.webhook.limits import BodyLimits, BodyRefused
from rice_mlops.webhook.recent import OncePerRun
from rice_mlops.webhook.secrets import SecretUnavailable, WebhookSecrets
from rice_mlops.webhook.settings import MAX_BODY_BYTES, WebhookSettings
from rice_mlops.webhook.signature import SignatureError, verify

log = logging.getLogger("rice_mlops.webhook")


def _answer(status: int, reason: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"status": status, "reason": reason, **extra}, status_code=status,
                        headers=headers)


# The rest of a refused body is never read: closing the connection frees it at once.
_CLOSE = {"Connection": "close"}


def create_app(settings: WebhookSettings | None = None, client: AirflowClient | None = None
               ) -> FastAPI:
    """The webhook app; `client` (tests pass a recording double) triggers the DAG runs."""
    settings = settings or WebhookSettings.from_env()
    settings.check()
    secrets = WebhookSecrets(settings.secret, settings.previous_secret, settings.secret_variable,
                             grace=settings.previous_ttl)
    limits = BodyLimits(MAX_BODY_BYTES, settings.body_deadline,
                        settings.max_unverified * MAX_BODY_BYTES, settings.first_byte_deadline,
                        settings.min_body_rate)
    if not secrets.configured:
        log.warning("GITHUB_WEBHOOK_SECRET is not set (nor GITHUB_WEBHOOK_SECRET_VARIABLE): "
                    "every webhook delivery will be refused")
    client = client or AirflowClient(settings.api_url, settings.username, settings.password,
                                     triggers_at_once=settings.triggers_at_once)
    app = FastAPI(title="rice-mlops GitHub webhook", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.client = client
    # Looked up per call: app.state.client is the seam a test or an operator may swap.
    triggers = OncePerRun(lambda *args: app.state.client.trigger(*args),
                          ttl=settings.recent_seconds)
    app.state.secrets = secrets
    app.state.limits = limits

    @app.post("/github")
    async def github(request: Request) -> JSONResponse:
        try:
            keys = await secrets.current()
        except SecretUnavailable as exc:  # details stay in the log, not in the answer
            log.warning("delivery refused: %s", exc)
            return _answer(503, "webhook secret unavailable; redeliver later")
        if not keys:
            return _answer(403, "webhook secret not configured on the server; refusing")
        try:
            body = await limits.read(request)
        except BodyRefused as exc:
            log.warning("delivery refused before its signature was checked: %s", exc.reason)
            return _answer(exc.status, exc.reason, headers=_CLOSE)
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
            result = await triggers.trigger(settings.dag_id, run_id, decision.conf)
        except AirflowUnavailable as exc:
            log.warning("delivery %s not triggered: %s", delivery, exc)
            return _answer(503, "Airflow is unavailable; redeliver once it is back",
                           delivery=delivery)
        except AirflowRejected as exc:
            # Airflow's answer may describe its configuration: the log keeps it, not the caller.
            log.warning("delivery %s refused by Airflow: %s", delivery, exc)
            return _answer(422, "Airflow refused the run; the API server's log has the reason",
                           delivery=delivery)
        if result.created:
            return _answer(200, "DAG run triggered", delivery=delivery, dag_run_id=run_id)
        return _answer(200, "already triggered for this commit", delivery=delivery,
                       dag_run_id=run_id, duplicate=True)

    return app
