"""rice_mlops.operations.job_alive, the triggerer's and DAG processor's compose healthcheck, and the
workers' Celery ping: neither imports Airflow (tests/integration/test_job_alive.py checks its
answers against `airflow jobs check` on a real stack)."""

from __future__ import annotations

import pytest

from rice_mlops.operations import job_alive
from tests.helpers.compose_file import COMPOSE

SERVICES = COMPOSE["services"]


@pytest.mark.parametrize("url, libpq", [
    ("postgresql://a:b@db/airflow", "postgresql://a:b@db/airflow"),
    ("postgresql+psycopg2://a:b@db:5432/airflow", "postgresql://a:b@db:5432/airflow"),
    ("postgres://a:b@db/airflow", "postgresql://a:b@db/airflow"),
])
def test_sqlalchemy_postgres_urls_become_libpq_urls(url, libpq):
    assert job_alive.libpq_url(url) == libpq


@pytest.mark.parametrize("url", ["", "sqlite:////tmp/airflow.db", "mysql://a:b@db/airflow",
                                 "xpostgresql://a@db/x"])
def test_other_databases_are_refused_with_what_to_use(url):
    with pytest.raises(ValueError, match="airflow jobs check"):
        job_alive.libpq_url(url)


def test_the_threshold_is_airflows_setting_for_that_job_type():
    assert job_alive.threshold_s("TriggererJob", {}) == 30.0
    env = {"AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "45.5",
           "AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD": "12"}
    assert job_alive.threshold_s("TriggererJob", env) == 45.5
    assert job_alive.threshold_s("DagProcessorJob", env) == 12.0


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "nan", "inf", "1e9"])
def test_a_threshold_that_is_not_a_sane_number_of_seconds_is_refused(raw):
    with pytest.raises(ValueError, match="AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"):
        job_alive.threshold_s("TriggererJob",
                              {"AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": raw})


@pytest.mark.parametrize("argv", [[], ["TriggererJob"], ["SchedulerJob", "h"], ["TriggererJob", ""],
                                  ["TriggererJob", "h", "extra"]])
def test_bad_arguments_exit_2_with_the_usage(argv, capsys):
    assert job_alive.main(argv) == 2
    assert "usage: python -m rice_mlops.operations.job_alive" in capsys.readouterr().err


def test_an_unreachable_database_is_unhealthy_and_the_url_is_not_printed(monkeypatch, capsys):
    url = "postgresql://airflow:hunter2@127.0.0.1:1/airflow"
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)
    assert job_alive.main(["TriggererJob", "host"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("TriggererJob on host: cannot check: OperationalError")
    assert "hunter2" not in err


@pytest.mark.parametrize("name, kind", [("airflow-triggerer", "TriggererJob"),
                                        ("airflow-dag-processor", "DagProcessorJob")])
def test_the_job_services_check_themselves_without_importing_airflow(name, kind):
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert test[1] == f'python -m rice_mlops.operations.job_alive {kind} "$${{HOSTNAME}}"'


@pytest.mark.parametrize("name", ["airflow-worker", "airflow-worker-docker",
                                  "airflow-worker-training"])
def test_the_workers_ping_through_celery_alone_with_the_url_in_the_environment(name):
    command = SERVICES[name]["healthcheck"]["test"][1]
    assert "--app" not in command and "airflow" not in command.replace(
        "AIRFLOW__CELERY__BROKER_URL", "")
    assert command.startswith('CELERY_BROKER_URL="$${AIRFLOW__CELERY__BROKER_URL}" celery ')
    assert 'inspect ping' in command and '-d "celery@$${HOSTNAME}"' in command
