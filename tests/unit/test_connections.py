"""Optional connections: an absent or token-less GitHub connection skips the pull request with
the reason; a registry connection gives the host the images are named after."""

from __future__ import annotations

import pytest

from rice_mlops.stages.connections import unusable_connection_reason


@pytest.fixture
def connections(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GH_EMPTY", '{"conn_type": "github", "password": ""}')
    monkeypatch.setenv("AIRFLOW_CONN_GH_TOKEN", '{"conn_type": "github", "password": "tok3n-x"}')
    monkeypatch.setenv("AIRFLOW_CONN_REG", '{"conn_type": "generic", "host": "http://127.0.0.1",'
                       ' "port": 5001, "login": "rice", "password": "pw123456"}')


def test_github_connection_reasons(connections):
    assert unusable_connection_reason("gh_token") is None
    assert "no token in its password" in unusable_connection_reason("gh_empty")
    assert "GITHUB_TOKEN" in unusable_connection_reason("gh_empty")
    assert "no Airflow connection 'gh_absent'" in unusable_connection_reason("gh_absent")


def test_registry_host_from_the_connection(connections):
    from rice_mlops.stages.connections import registry_host

    assert registry_host("reg") == "127.0.0.1:5001"
    assert registry_host("reg_absent") is None


def test_the_registry_api_may_have_another_address_than_the_engine_pushes_to(connections,
                                                                            monkeypatch):
    from rice_mlops.stages.connections import registry_api, registry_host

    monkeypatch.setenv("AIRFLOW_CONN_REG_COMPOSE", '{"conn_type": "generic", "host": '
                       '"127.0.0.1", "port": 5001, "extra": {"api_url": "http://registry:5000/"}}')
    assert registry_api("reg") == "127.0.0.1:5001"  # no extra: the same address
    assert registry_api("reg_compose") == "http://registry:5000"
    assert registry_host("reg_compose") == "127.0.0.1:5001"  # images stay named after it
    assert registry_api("reg_absent") is None


def test_canary_windows_come_from_prometheus_only_where_its_connection_exists(monkeypatch):
    from rice_mlops.release.rollout.windows import PrometheusMetrics
    from rice_mlops.stages.connections import prometheus_windows

    monkeypatch.setenv("AIRFLOW_CONN_PROM", '{"conn_type": "http", "host": "prometheus", '
                       '"port": 9090, "login": "prometheus", "password": "pw-1234567890", '
                       '"extra": {"scrape_seconds": 2}}')
    windows = prometheus_windows("prom")
    assert isinstance(windows, PrometheusMetrics)
    assert (windows.url, windows.auth, windows.scrape_seconds) == (
        "http://prometheus:9090", ("prometheus", "pw-1234567890"), 2.0)
    assert prometheus_windows("prom_absent") is None  # the servers' own /metrics then
    for odd in ('"2"', "0", "600", "true"):
        monkeypatch.setenv("AIRFLOW_CONN_PROM_ODD", '{"conn_type": "http", "host": "p", '
                           f'"extra": {{"scrape_seconds": {odd}}}}}')
        with pytest.raises(ValueError, match="scrape_seconds") as caught:
            prometheus_windows("prom_odd")
        assert "prom_odd" in str(caught.value)
