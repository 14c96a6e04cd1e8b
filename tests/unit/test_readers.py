"""One parser and one error type for every settings object but the serving image's: a bad
value is refused with a message that says which variable, what it holds, what it accepts and
what to do, whether the pipeline, the webhook or the command line reads it."""

from __future__ import annotations

import pytest

from rice_mlops.core import readers as read
from rice_mlops.core.readers import SettingsError
from rice_mlops.core.settings import PipelineSettings
from rice_mlops.ingress.settings import TRIGGERS_AT_ONCE, WebhookSettings
from rice_mlops.operations.accounts import parse_service_accounts
from rice_mlops.operations.tool_settings import ToolSettings


@pytest.mark.parametrize(("reader", "env", "message"), [
    (PipelineSettings.from_env, {"RICE_EPOCHS": "many"},
     "RICE_EPOCHS='many' is not an integer; it accepts an integer ≥ 1: change it, or unset it "
     "for the default (25)"),
    (PipelineSettings.from_env, {"RICE_EPOCHS": "0"},
     "RICE_EPOCHS=0 is out of bounds; it accepts an integer ≥ 1: change it, or unset it for "
     "the default (25)"),
    (PipelineSettings.from_env, {"RICE_TRAIN_NICE": "20"},
     "RICE_TRAIN_NICE=20 is out of bounds; it accepts an integer from 0 to 19: change it, or "
     "unset it for the default (10)"),
    (PipelineSettings.from_env, {"RICE_MIN_TEST_ACCURACY": "97"},
     "RICE_MIN_TEST_ACCURACY=97 is out of bounds; it accepts a fraction from 0 to 1: change "
     "it, or unset it for the default (0.97)"),
    (PipelineSettings.from_env, {"RICE_GATE_CONFIDENCE": "1"},
     "RICE_GATE_CONFIDENCE=1 is out of bounds; it accepts a fraction strictly between 0 and 1"),
    (PipelineSettings.from_env, {"RICE_MAX_P50_MS": "fast"},
     "RICE_MAX_P50_MS='fast' is not a number; it accepts a number ≥ 0.1"),
    (PipelineSettings.from_env, {"RICE_REQUIRE_APPROVAL": "yes"},
     "RICE_REQUIRE_APPROVAL='yes' is not an accepted value; it accepts one of true, false"),
    (WebhookSettings.from_env, {"GITHUB_WEBHOOK_BODY_TIMEOUT": "soon"},
     "GITHUB_WEBHOOK_BODY_TIMEOUT='soon' is not a number; it accepts a number > 0: change it, "
     "or unset it for the default (10.0)"),
    (WebhookSettings.from_env, {"GITHUB_WEBHOOK_MIN_BODY_RATE": "0"},
     "GITHUB_WEBHOOK_MIN_BODY_RATE=0 is out of bounds; it accepts a number > 0"),
    (WebhookSettings.from_env, {"GITHUB_WEBHOOK_RECENT_SECONDS": "inf"},
     "GITHUB_WEBHOOK_RECENT_SECONDS=inf is out of bounds; it accepts a number > 0"),
    (WebhookSettings.from_env, {"GITHUB_WEBHOOK_MAX_UNVERIFIED": "2.5"},
     "GITHUB_WEBHOOK_MAX_UNVERIFIED='2.5' is not an integer; it accepts an integer ≥ 1: change "
     "it, or unset it for the default (8)"),
])
def test_a_refusal_names_the_variable_its_value_what_it_accepts_and_what_to_do(reader, env,
                                                                             message):
    with pytest.raises(SettingsError) as refused:
        reader(env)
    assert str(refused.value).startswith(message)
    assert refused.value.name == next(iter(env))


def test_a_short_webhook_secret_is_refused_by_length_never_by_value():
    settings = WebhookSettings.from_env({"GITHUB_WEBHOOK_SECRET": "change-me"})
    with pytest.raises(SettingsError) as refused:
        settings.check()
    assert str(refused.value).startswith(
        "GITHUB_WEBHOOK_SECRET is 9 characters long; it accepts a secret of at least 32 "
        "characters: generate one with")
    assert "change-me" not in str(refused.value)


def test_the_command_line_and_the_services_refuse_with_the_same_error():
    with pytest.raises(SettingsError, match="RICE_SERVICE_ACCOUNTS: 'webhook=admin' is not "
                                            "name=grant; it accepts comma-separated name=grant"):
        parse_service_accounts("webhook=admin")
    with pytest.raises(SettingsError, match="MLFLOW_AUTH_ADMIN_PASSWORD, "
                                            "MLFLOW_PIPELINE_PASSWORD not set"):
        ToolSettings.from_env({"MLFLOW_TRACKING_URI": "http://mlflow:5000",
                               "MLFLOW_PIPELINE_USERNAME": "pipeline"}).require_mlflow_users()


def test_blank_means_the_default_and_text_is_stripped():
    env = {"A": "  ", "B": " x ", "C": " a, ,b ,"}
    assert read.text(env, "A", "d") == "d" and read.text(env, "B") == "x"
    assert read.integer(env, "A", 3) == 3 and read.number(env, "A", 1.5) == 1.5
    assert read.listed(env, "C") == ("a", "b")
    assert read.secret({"S": " s "}, "S") == " s " and read.secret({"S": ""}, "S") is None
    assert read.flag({"F": "TRUE"}, "F", False) is True


def test_the_webhook_reads_its_dag_id_and_falls_back_to_the_api_servers_url():
    settings = WebhookSettings.from_env({"RICE_WEBHOOK_DAG_ID": "rice_staging",
                                         "AIRFLOW__API__BASE_URL": "http://api:8080",
                                         "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://x"})
    assert (settings.dag_id, settings.api_url, settings.triggers_at_once) == \
        ("rice_staging", "http://api:8080", TRIGGERS_AT_ONCE)
    assert TRIGGERS_AT_ONCE > 1
    assert WebhookSettings.from_env({}).triggers_at_once == 1  # SQLite


def test_the_command_line_answers_a_bad_setting_with_its_message_not_a_traceback(monkeypatch,
                                                                                  capsys):
    from rice_mlops.operations.cli import main

    monkeypatch.setenv("RICE_EPOCHS", "many")
    assert main(["image", "build", "--model-uri", "models:/rice-classifier/1", "--tag",
                 "rice:dev"]) == 2  # --help reads no setting (tests/unit/test_cli_help.py)
    assert capsys.readouterr().err == (
        "error: RICE_EPOCHS='many' is not an integer; it accepts an integer ≥ 1: change it, or "
        "unset it for the default (25)\n")


def test_the_error_survives_pickling_with_its_message_and_variable():
    import pickle

    from rice_mlops.ingress.settings import SecretTooShort, check_length

    for error in (SettingsError("RICE_X", "RICE_X='y' is not an integer", "an integer"),
                  pytest.raises(SecretTooShort, check_length, "GITHUB_WEBHOOK_SECRET", "x").value):
        copy = pickle.loads(pickle.dumps(error))
        assert (type(copy), str(copy), copy.name) == (type(error), str(error), error.name)
