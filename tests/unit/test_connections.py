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
