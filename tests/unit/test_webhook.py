"""Signature verification and event filtering of the GitHub webhook receiver."""

from __future__ import annotations

import pytest

from rice_mlops.ingress.events import dag_run_id, decide, valid_delivery
from rice_mlops.ingress.signature import SignatureError, sign, verify

GITHUB_VECTOR = ("It's a Secret to Everybody", b"Hello, World!",
                 "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def test_github_documented_test_vector():
    secret, body, expected = GITHUB_VECTOR
    assert sign(secret, body) == expected
    verify(secret, body, expected)


@pytest.mark.parametrize(
    ("header", "status", "fragment"),
    [
        (None, 401, "missing"),
        ("", 401, "missing"),
        ("sha1=757107ea", 400, "malformed"),
        ("sha256=XYZ", 400, "malformed"),
        ("sha256=" + "0" * 64, 401, "does not match"),
        (GITHUB_VECTOR[2].upper().replace("SHA256", "sha256"), 400, "malformed"),
    ],
)
def test_bad_signatures_are_refused(header, status, fragment):
    secret, body, _ = GITHUB_VECTOR
    with pytest.raises(SignatureError) as caught:
        verify(secret, body, header)
    assert caught.value.status == status and fragment in caught.value.reason


def test_wrong_secret_or_changed_body_is_refused():
    secret, body, signature = GITHUB_VECTOR
    with pytest.raises(SignatureError):
        verify("another secret", body, signature)
    with pytest.raises(SignatureError):
        verify(secret, body + b" ", signature)


def _push(**overrides) -> dict:
    payload = {"ref": "refs/heads/main", "after": SHA, "deleted": False,
               "repository": {"full_name": "acme/rice"}, "pusher": {"name": "octo"},
               "compare": "https://github.com/acme/rice/compare/abc...def"}
    payload.update(overrides)
    return payload


ACME = frozenset({"acme/rice"})


def _decide(event="push", payload=None, repos=ACME):
    return decide(event, payload if payload is not None else _push(), branch="main",
                  allowed_repositories=repos)


def test_push_to_main_triggers_with_conf():
    decision = _decide()
    assert decision.trigger and decision.status == 200
    assert decision.conf == {"source_commit": SHA, "source_ref": "refs/heads/main",
                             "source_repository": "acme/rice", "pusher": "octo",
                             "compare_url": "https://github.com/acme/rice/compare/abc...def"}


@pytest.mark.parametrize(
    ("event", "payload", "repos", "status", "fragment"),
    [
        ("ping", {}, ACME, 200, "pong"),
        ("issues", {}, ACME, 202, "'issues' is ignored"),
        ("push", _push(ref="refs/heads/dev"), ACME, 202, "refs/heads/dev is ignored"),
        ("push", _push(ref="refs/tags/v1.0"), ACME, 202, "tag push"),
        ("push", _push(deleted=True, after="0" * 40), ACME, 202, "deleting"),
        ("push", _push(), frozenset({"other/repo"}), 202, "not in the allow-list (other/repo"),
        ("push", _push(), frozenset(), 202, "not in the allow-list (none;"),
        ("push", _push(after="nothex"), ACME, 400, "40-hex"),
        ("push", {"ref": "refs/heads/main"}, ACME, 400, "lacks ref or repository"),
    ],
)
def test_everything_else_is_acknowledged_without_a_run(event, payload, repos, status, fragment):
    decision = _decide(event, payload, repos)
    assert not decision.trigger
    assert decision.status == status and fragment in decision.reason


def test_allow_listed_repository_triggers_and_any_repository_is_asked_for_by_name():
    assert _decide(repos=ACME).trigger
    assert not _decide(repos=frozenset()).trigger  # the default, when nothing is set
    assert _decide(payload=_push(repository={"full_name": "other/fork"}),
                   repos=frozenset({"*"})).trigger


@pytest.mark.parametrize(("env", "allowed"), [
    ({}, frozenset()),
    ({"RICE_GITHUB_REPOSITORY": "acme/rice"}, ACME),
    ({"RICE_GITHUB_REPOSITORY": "acme/rice", "GITHUB_WEBHOOK_REPOSITORIES": "acme/a, acme/b"},
     frozenset({"acme/a", "acme/b"})),
    ({"GITHUB_WEBHOOK_REPOSITORIES": "*"}, frozenset({"*"})),
])
def test_the_allow_list_defaults_to_the_repository_the_pipeline_publishes_to(env, allowed):
    from rice_mlops.ingress.settings import allowed_repositories

    assert allowed_repositories(env) == allowed


@pytest.mark.parametrize(("env", "named"), [
    ({"GITHUB_WEBHOOK_REPOSITORIES": "acme"}, "GITHUB_WEBHOOK_REPOSITORIES"),
    ({"GITHUB_WEBHOOK_REPOSITORIES": "acme/rice,../x/y"}, "GITHUB_WEBHOOK_REPOSITORIES"),
    ({"RICE_GITHUB_REPOSITORY": "acme/rice/extra"}, "RICE_GITHUB_REPOSITORY"),
])
def test_a_malformed_allow_list_names_its_variable(env, named):
    from rice_mlops.core.readers import SettingsError
    from rice_mlops.ingress.settings import allowed_repositories

    with pytest.raises(SettingsError, match="not a repository") as refused:
        allowed_repositories(env)
    assert refused.value.name == named


def test_run_id_is_deterministic_per_pushed_content():
    conf = {"source_repository": "acme/rice.ml", "source_commit": "a" * 40}
    assert dag_run_id(conf) == dag_run_id(dict(conf)) == f"github__acme.rice.ml__{'a' * 40}"
    assert dag_run_id({**conf, "source_commit": "b" * 40}) != dag_run_id(conf)
    assert dag_run_id({**conf, "source_repository": "acme/other"}) != dag_run_id(conf)
    assert valid_delivery("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert not valid_delivery("../etc/passwd") and not valid_delivery(None)


def test_previous_secret_is_accepted_during_a_rotation():
    body = b'{"zen": "rotate"}'
    verify(("new secret", "old secret"), body, sign("old secret", body))
    verify(("new secret", "old secret"), body, sign("new secret", body))
    with pytest.raises(SignatureError):
        verify(("new secret", "old secret"), body, sign("older secret", body))


def _long(value: str) -> str:
    """A value long enough to be accepted as a webhook secret (MIN_SECRET_LENGTH)."""
    return value.ljust(32, "_")


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.anyio
async def test_secret_from_a_variable_is_reread_after_its_ttl():
    from rice_mlops.ingress.secrets import WebhookSecrets

    store, clock = {"hook": _long("first")}, _Clock()
    secrets = WebhookSecrets(None, _long("older"), "hook", ttl=60, grace=3600, lookup=store.get,
                             clock=clock)
    assert secrets.configured
    assert await secrets.current() == (_long("first"), _long("older"))
    store["hook"] = _long("second")
    clock.now = 59
    assert await secrets.current() == (_long("first"), _long("older"))  # cached
    clock.now = 61
    # Rotated in the Variable: the value it replaced stays valid while GitHub catches up.
    assert await secrets.current() == (_long("second"), _long("first"), _long("older"))
    clock.now = 61 + 3600
    # Both the replaced value and the environment's previous secret have expired.
    assert await secrets.current() == (_long("second"),)


@pytest.mark.anyio
async def test_an_unreadable_variable_keeps_the_last_secret_or_refuses():
    from rice_mlops.ingress.secrets import SecretUnavailable, WebhookSecrets

    def broken(key):
        raise ConnectionError("backend down")

    never = WebhookSecrets(None, None, "hook", lookup=broken)
    with pytest.raises(SecretUnavailable, match="'hook'"):
        await never.current()
    with pytest.raises(SecretUnavailable, match="retrying soon"):
        await never.current()

    clock, calls = _Clock(), []

    def flaky(key):
        calls.append(key)
        if len(calls) > 1:
            raise ConnectionError("backend down")
        return _long("kept")

    secrets = WebhookSecrets(None, None, "hook", ttl=1, lookup=flaky, clock=clock)
    assert await secrets.current() == (_long("kept"),)
    clock.now = 5
    assert await secrets.current() == (_long("kept"),)
    assert await secrets.current() == (_long("kept"),)  # backing off: the backend is not called
    assert len(calls) == 2
    clock.now = 7
    assert await secrets.current() == (_long("kept"),)
    assert len(calls) == 3


@pytest.mark.anyio
async def test_the_environment_secret_wins_and_nothing_configured_is_empty(monkeypatch):
    from plugins.github_webhook import read_variable
    from rice_mlops.core.readers import SettingsError
    from rice_mlops.ingress.secrets import WebhookSecrets

    monkeypatch.setenv("AIRFLOW_VAR_RICE_TEST_HOOK", _long("from-airflow-variable"))
    assert read_variable("rice_test_hook") == _long("from-airflow-variable")  # Airflow's own lookup
    assert await WebhookSecrets(_long("env"), None, "rice_test_hook",
                                lookup=read_variable).current() == (_long("env"),)
    assert await WebhookSecrets(None, None, "rice_test_hook", lookup=read_variable).current() == (
        _long("from-airflow-variable"),)
    with pytest.raises(SettingsError, match="no lookup was given"):
        WebhookSecrets(None, None, "rice_test_hook")
    assert not WebhookSecrets(None, _long("old"), None).configured
    assert await WebhookSecrets(None, _long("old"), None).current() == ()
    assert await WebhookSecrets(None, None, None).current() == ()


def test_send_posts_one_signed_delivery_through_the_client_it_is_given():
    import httpx

    from rice_mlops.ingress.send import push_payload, send

    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": 200})

    payload = push_payload("refs/heads/main", "a" * 40, "acme/rice")
    with httpx.Client(transport=httpx.MockTransport(answer),
                      headers={"Connection": "close"}) as client:
        for _ in range(2):
            assert send("http://hook.test/github", GITHUB_VECTOR[0], payload, delivery=None,
                        client=client).status_code == 200
    assert len(seen) == 2
    for request in seen:
        # the receiver's own check accepts it, and the client's headers ride along
        verify([GITHUB_VECTOR[0]], request.content, request.headers["x-hub-signature-256"])
        assert request.headers["x-github-event"] == "push"
        assert request.headers["connection"] == "close"
    assert seen[0].headers["x-github-delivery"] != seen[1].headers["x-github-delivery"]
