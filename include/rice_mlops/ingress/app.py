"""The FastAPI app mounted on the Airflow API server at /webhooks (see plugins/).

Airflow does not authenticate plugin apps: the HMAC signature is the only gate, so it is
checked first, over the raw body, before anything else is parsed. Until then the sender is
anonymous, so reading the body is bounded (rice_mlops.ingress.limits), and what goes back to
the caller is a generic reason: Airflow's own answers stay in the log. Every refusal is logged
at warning with its reason (never the body or a secret) and counted (`GET /webhooks/metrics`,
rice_mlops.ingress.metrics).

GitHub sends a delivery as `application/json` or as `application/x-www-form-urlencoded` (the
first its form offers), the JSON then in the `payload` field; the signature covers the raw
body either way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from email.message import Message
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from rice_mlops.core.airflow_rest import AirflowRejected, AirflowUnavailable, AsyncAirflowRest
from rice_mlops.ingress.events import dag_run_id, decide, valid_delivery
from rice_mlops.ingress.limits import BodyLimits, BodyRefused
from rice_mlops.ingress.metrics import DeliveryMetrics
from rice_mlops.ingress.recent import OncePerRun
from rice_mlops.ingress.secrets import SecretUnavailable, WebhookSecrets
from rice_mlops.ingress.settings import MAX_BODY_BYTES, WebhookSettings
from rice_mlops.ingress.signature import SignatureError, verify

log = logging.getLogger("rice_mlops.ingress")


def _answer(status: int, reason: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"status": status, "reason": reason, **extra}, status_code=status,
                        headers=headers)


# The rest of a refused body is never read: closing the connection frees it at once.
_CLOSE = {"Connection": "close"}
JSON, FORM = "application/json", "application/x-www-form-urlencoded"


class PayloadRefused(ValueError):
    """The signed body holds no JSON object where its content type says (415 or 400)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def parse_payload(content_type: str | None, body: bytes) -> dict:
    """The delivery's JSON object, from a JSON body or a form body's one `payload` field."""
    header = Message()
    header["content-type"] = content_type or ""
    media = header.get_content_type() if content_type else ""
    if media == FORM:
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=10,
                              errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise PayloadRefused(400, "form body is not valid application/x-www-form-urlencoded "
                                      "UTF-8") from None
        if list(fields) != ["payload"] or len(fields["payload"]) != 1:
            raise PayloadRefused(400, "form body must hold exactly one 'payload' field")
        text: str | bytes = fields["payload"][0]
    elif media == JSON:
        text = body
    else:
        raise PayloadRefused(415, f"Content-Type must be {JSON} or {FORM} (set it on GitHub)")
    try:
        payload = json.loads(text)
    except ValueError:
        raise PayloadRefused(400, "payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise PayloadRefused(400, "payload is not a JSON object")
    return payload


def create_app(settings: WebhookSettings | None = None, client: AsyncAirflowRest | None = None,
               variable_lookup: Callable[[str], str | None] | None = None) -> FastAPI:
    """The webhook app; `client` (tests pass a recording double) triggers the DAG runs, and
    `variable_lookup` reads GITHUB_WEBHOOK_SECRET_VARIABLE (the plugin passes Airflow's)."""
    settings = settings or WebhookSettings.from_env()
    settings.check()
    secrets = WebhookSecrets(settings.secret, settings.previous_secret, settings.secret_variable,
                             grace=settings.previous_ttl, lookup=variable_lookup)
    limits = BodyLimits(MAX_BODY_BYTES, settings.body_deadline,
                        settings.max_unverified * MAX_BODY_BYTES, settings.first_byte_deadline,
                        settings.min_body_rate)
    if not secrets.configured:
        log.warning("GITHUB_WEBHOOK_SECRET is not set (nor GITHUB_WEBHOOK_SECRET_VARIABLE): "
                    "every webhook delivery will be refused")
    if not settings.repositories:
        log.warning("no repository is allowed (set GITHUB_WEBHOOK_REPOSITORIES, or "
                    "RICE_GITHUB_REPOSITORY): every push will be refused")
    client = client or AsyncAirflowRest(settings.api_url, settings.username, settings.password,
                                     triggers_at_once=settings.triggers_at_once)
    app = FastAPI(title="rice-mlops GitHub webhook", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.client = client
    # Looked up per call: app.state.client is the seam a test or an operator may swap.
    triggers = OncePerRun(lambda *args: app.state.client.trigger(*args),
                          ttl=settings.recent_seconds)
    app.state.secrets = secrets
    app.state.limits = limits

    metrics = DeliveryMetrics()
    app.state.metrics = metrics

    def refused(status: int, reason: str, kind: str, headers: dict | None = None,
                **extra) -> JSONResponse:
        log.warning("delivery %s refused (%s): %s", extra.get("delivery", "-"), status, reason)
        metrics.count("unavailable" if status == 503 else "refused", status, kind)
        return _answer(status, reason, headers, **extra)

    @app.get("/metrics")
    async def exposition() -> Response:
        return Response(metrics.exposition(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/github")
    async def github(request: Request) -> JSONResponse:
        try:
            keys = await secrets.current()
        except SecretUnavailable as exc:  # details stay in the log, not in the answer
            log.warning("delivery refused: %s", exc)
            metrics.count("unavailable", 503, "secret")
            return _answer(503, "webhook secret unavailable; redeliver later")
        if not keys:
            return refused(403, "webhook secret not configured on the server; refusing",
                           "secret")
        try:
            body = await limits.read(request)
        except BodyRefused as exc:
            return refused(exc.status, exc.reason, "body", headers=_CLOSE)
        try:
            verify(keys, body, request.headers.get("x-hub-signature-256"))
        except SignatureError as exc:
            return refused(exc.status, exc.reason, "signature")
        event = request.headers.get("x-github-event")
        delivery = request.headers.get("x-github-delivery")
        if not event:
            return refused(400, "missing X-GitHub-Event header", "headers")
        if not valid_delivery(delivery):
            return refused(400, "missing or malformed X-GitHub-Delivery header", "headers")
        try:
            payload = parse_payload(request.headers.get("content-type"), body)
        except PayloadRefused as exc:
            return refused(exc.status, exc.reason,
                           "content_type" if exc.status == 415 else "payload",
                           delivery=delivery)
        decision = decide(event, payload, branch=settings.branch,
                          allowed_repositories=settings.repositories)
        if decision.refused:
            return refused(decision.status, decision.reason,
                           "repository" if decision.status == 202 else "payload",
                           delivery=delivery)
        log.info("delivery %s (%s): %s", delivery, event, decision.reason)
        if not decision.trigger:
            metrics.count("ignored", decision.status)
            return _answer(decision.status, decision.reason, delivery=delivery)
        run_id = dag_run_id(decision.conf)
        try:
            result = await triggers.trigger(settings.dag_id, run_id, decision.conf)
        except AirflowUnavailable as exc:
            log.warning("delivery %s not triggered: %s", delivery, exc)
            metrics.count("unavailable", 503, "airflow")
            return _answer(503, "Airflow is unavailable; redeliver once it is back",
                           delivery=delivery)
        except AirflowRejected as exc:
            # Airflow's answer may describe its configuration: the log keeps it, not the caller.
            log.warning("delivery %s refused by Airflow: %s", delivery, exc)
            metrics.count("refused", 422, "airflow")
            return _answer(422, "Airflow refused the run; the API server's log has the reason",
                           delivery=delivery)
        if result.created:
            metrics.count("triggered", 200)
            return _answer(200, "DAG run triggered", delivery=delivery, dag_run_id=run_id)
        metrics.count("duplicate", 200)
        return _answer(200, "already triggered for this commit", delivery=delivery,
                       dag_run_id=run_id, duplicate=True)

    return app
