"""The webhook app's settings as its unit tests build them: a secret of the minimum
length, every other setting plausible, a test's `overrides` on top."""

from __future__ import annotations

from rice_mlops.ingress.settings import MIN_SECRET_LENGTH, WebhookSettings

SECRET = "s" * MIN_SECRET_LENGTH


def webhook_settings(**overrides) -> WebhookSettings:
    values = dict(secret=SECRET, branch="main", repositories=frozenset({"*"}),
                  dag_id="rice_classifier_cicd", api_url="http://127.0.0.1:9", username="u",
                  password="p", triggers_at_once=2)
    return WebhookSettings(**{**values, **overrides})
