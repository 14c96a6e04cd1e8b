"""The compose stack's Prometheus and Alertmanager files (issue 38), rendered from .env by
prometheus-init: accepted by Prometheus's and Alertmanager's own checkers (promtool, amtool,
from Debian's packages as scripts/lint.sh unpacks them), no secret in a file that is not one,
and a clear refusal of a setting they cannot be built from."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess

import pytest

from rice_mlops.operations import monitoring_stack as ms
from tests.helpers.paths import REPO

ENV = {"PROMETHEUS_PASSWORD": "correct-horse-battery-staple",
       "RICE_SERVING_ADDRESSES": "10.85.213.10,10.85.213.11,10.85.213.12"}


def _tool(name: str) -> str:
    found = shutil.which(name) or str(REPO / ".run" / "tools" / "usr" / "bin" / name)
    if not shutil.os.access(found, shutil.os.X_OK):
        pytest.skip(f"{name} not unpacked yet (scripts/lint.sh does it, before the tests)")
    return found


def _fake_hash(password: str) -> str:
    return "$2y$10$" + "x" * 53


def test_the_files_pass_prometheus_and_alertmanager_checkers(tmp_path):
    env = {**ENV, "RICE_ALERT_SMTP": "smtp://alerts%40corp.example:s%3Acret@mail.corp.example:587",
           "RICE_ALERT_EMAILS": "oncall@corp.example, ml@corp.example",
           "RICE_ALERT_FROM": "rice@corp.example"}
    said = ms.render(tmp_path, env)  # the real htpasswd -B
    assert said == ["alerts are mailed to 2 address(es) through mail.corp.example:587"]
    prometheus = tmp_path / "prometheus"
    checked = subprocess.run([_tool("promtool"), "check", "config",
                              str(prometheus / "prometheus.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = subprocess.run([_tool("promtool"), "check", "web-config",
                              str(prometheus / "web.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    checked = subprocess.run([_tool("amtool"), "check-config",
                              str(tmp_path / "alertmanager" / "alertmanager.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    config = json.loads((prometheus / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["rice-serving"]["static_configs"] == [
        {"targets": ["10.85.213.11:8502"], "labels": {"slot": "blue"}},
        {"targets": ["10.85.213.12:8503"], "labels": {"slot": "green"}}]
    assert jobs["rice-pipeline"]["metrics_path"] == "/rice/metrics"
    assert jobs["rice-webhook"]["metrics_path"] == "/webhooks/metrics"
    manager = json.loads((tmp_path / "alertmanager" / "alertmanager.yml").read_text())
    mail = manager["receivers"][0]["email_configs"][0]
    assert mail["to"] == "oncall@corp.example, ml@corp.example"
    assert mail["auth_username"] == "alerts@corp.example"
    assert manager["global"]["smtp_smarthost"] == "mail.corp.example:587"
    # The secrets are in their own files (0640), in no configuration file and nowhere else.
    for name, secret in (("prometheus/password", ENV["PROMETHEUS_PASSWORD"]),
                         ("alertmanager/smtp_password", "s:cret")):
        path = tmp_path / name
        assert path.read_text() == secret
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    for path in tmp_path.rglob("*.yml"):
        text = path.read_text()
        assert ENV["PROMETHEUS_PASSWORD"] not in text and "s:cret" not in text, path
    assert json.loads((prometheus / "web.yml").read_text())["basic_auth_users"][
        "prometheus"].startswith("$2")


def test_without_a_mail_server_alerts_stay_in_alertmanager_and_the_log_says_what_to_set(
        tmp_path):
    said = ms.render(tmp_path, ENV, hash_password=_fake_hash)
    assert "set RICE_ALERT_SMTP" in said[0]
    manager = json.loads((tmp_path / "alertmanager" / "alertmanager.yml").read_text())
    assert manager["route"]["receiver"] == "none" and manager["receivers"] == [{"name": "none"}]


@pytest.mark.parametrize("text, expected", [
    ("smtp://mail.example:25", ms.Smtp("mail.example", 25)),
    ("smtp://u:p@mail.example:465", ms.Smtp("mail.example", 465, "u", "p")),
    ("smtp://mail.example:25?disable_tls=true&disable_ssl=true",
     ms.Smtp("mail.example", 25, require_tls=False)),
    ('{"conn_type": "smtp", "host": "mail.example", "port": 587, "login": "u", '
     '"password": "p", "extra": {"disable_tls": false}}',
     ms.Smtp("mail.example", 587, "u", "p")),
    ('{"conn_type": "smtp", "host": "mail.example", "port": "2525", '
     '"extra": "{\\"disable_tls\\": true, \\"disable_ssl\\": true}"}',
     ms.Smtp("mail.example", 2525, require_tls=False)),
    ("", None)])
def test_the_mail_server_is_read_as_airflow_writes_an_smtp_connection(text, expected):
    assert ms.smtp_from_connection(text) == expected


@pytest.mark.parametrize("env, named", [
    ({"PROMETHEUS_PASSWORD": "short"}, "PROMETHEUS_PASSWORD"),
    ({"PROMETHEUS_PASSWORD": "long enough but\nsplit"}, "PROMETHEUS_PASSWORD"),
    ({"PROMETHEUS_PASSWORD": 'quote " breaks the connection json'}, "PROMETHEUS_PASSWORD"),
    ({"PROMETHEUS_USER": "root:x"}, "PROMETHEUS_USER"),
    ({"RICE_SERVING_ADDRESSES": "10.0.0.1,10.0.0.2"}, "RICE_SERVING_ADDRESSES"),
    ({"RICE_SERVING_ADDRESSES": "a,b,c d"}, "RICE_SERVING_ADDRESSES"),
    ({"RICE_ROLLOUT_SLOT_PORTS": "8502,70000"}, "ports"),
    ({"RICE_ALERT_SMTP": "http://mail.example"}, "RICE_ALERT_SMTP"),
    ({"RICE_ALERT_SMTP": "smtp://mail.example:x"}, "RICE_ALERT_SMTP"),
    ({"RICE_ALERT_SMTP": "{not json"}, "RICE_ALERT_SMTP"),
    ({"RICE_ALERT_SMTP": "[1, 2]"}, "RICE_ALERT_SMTP"),
    ({"RICE_ALERT_SMTP": '{"host": "mail.example; rm -rf /"}'}, "RICE_ALERT_SMTP"),
    ({"RICE_ALERT_EMAILS": "a@b.example, not-an-address"}, "RICE_ALERT_EMAILS"),
    ({"RICE_ALERT_EMAILS": "a@b.example\nBcc: x@evil.example"}, "RICE_ALERT_EMAILS"),
    ({"RICE_ALERT_FROM": "x"}, "RICE_ALERT_FROM")])
def test_a_setting_it_cannot_use_is_refused_by_name_and_nothing_is_written(tmp_path, env,
                                                                           named):
    with pytest.raises(ms.ConfigError, match=named):
        ms.render(tmp_path, {**ENV, **env}, hash_password=_fake_hash)
    assert not list(tmp_path.rglob("*.yml"))


def test_the_script_runs_alone_with_the_standard_library(tmp_path):
    """prometheus-init runs this one file in Debian's htpasswd image, without the package."""
    script = REPO / "include" / "rice_mlops" / "operations" / "monitoring_stack.py"
    env = {**ENV, "PATH": shutil.os.environ["PATH"], "PROMETHEUS_UID": str(shutil.os.getuid())}
    done = subprocess.run(["python3", "-I", str(script), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "prometheus" / "web.yml").exists()
    done = subprocess.run(["python3", "-I", str(script), str(tmp_path / "x")],
                          env={**env, "PROMETHEUS_PASSWORD": ""}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "PROMETHEUS_PASSWORD must be set" in done.stderr


def test_its_slots_are_the_rollouts():
    """The script runs alone (no package import), so it names the slots itself: the same."""
    from rice_mlops.release.rollout.state import SLOTS

    assert ms.SLOTS == SLOTS
