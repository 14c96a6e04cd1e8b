"""The compose stack's Prometheus and Alertmanager configuration, rendered from .env at `up`.

Run by the `prometheus-init` service (Debian's htpasswd image: this file alone, the standard
library and `htpasswd`), because neither Prometheus 2.42 nor Alertmanager 0.25 reads variables
in its configuration and the serving addresses, the password and the mail server are .env's:

- `prometheus/prometheus.yml`: scrape the two serving slots (by slot; the model version is
  their `rice_serving_model_info`), the webhook receiver's and the pipeline's counters on the
  API server, Alertmanager and Prometheus itself; rules from docker/prometheus/rules.
- `prometheus/web.yml`: basic auth (bcrypt, from `htpasswd -B`; the password reaches htpasswd
  on stdin, never an argument) for the published UI and API.
- `alertmanager/alertmanager.yml` and `alertmanager/smtp_password`: mail through the SMTP
  server of RICE_ALERT_SMTP, an Airflow connection (URI or JSON, the form the pipeline's
  `smtp_default` takes) to RICE_ALERT_EMAILS; without one, alerts stay in Alertmanager's UI and
  API and the log says what to set.

YAML is written as JSON (a subset of YAML), so no YAML library is needed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

SLOTS = ("blue", "green")
SCRAPE_INTERVAL_SECONDS = 5  # a canary window (10 s by default) holds at least two scrapes
RULES_DIR = "/etc/prometheus/rules"
SMTP_PASSWORD_FILE = "/etc/alertmanager/config/smtp_password"
USER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
EMAIL = re.compile(r"^[^@\s,]{1,64}@[A-Za-z0-9.-]{1,253}$")
HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$")


class ConfigError(ValueError):
    """A setting the monitoring stack cannot be configured from; the message names it."""


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    login: str = ""
    password: str = ""
    require_tls: bool = True


def serving_targets(addresses: str, ports: str) -> dict[str, str]:
    """slot -> host:port from RICE_SERVING_ADDRESSES (proxy, blue, green) and the slots' ports."""
    hosts = [item.strip() for item in addresses.split(",")]
    numbers = [item.strip() for item in ports.split(",")]
    if len(hosts) != 1 + len(SLOTS) or not all(HOST.match(h) for h in hosts):
        raise ConfigError(f"RICE_SERVING_ADDRESSES must be {1 + len(SLOTS)} addresses "
                          f"(proxy,{','.join(SLOTS)}), got {addresses!r}")
    if len(numbers) != len(SLOTS) or not all(n.isdigit() and 0 < int(n) < 65536
                                             for n in numbers):
        raise ConfigError(f"the serving slots' ports must be {len(SLOTS)} port numbers, got "
                          f"{ports!r}")
    return {slot: f"{host}:{port}" for slot, host, port in zip(SLOTS, hosts[1:], numbers,
                                                                strict=True)}


def prometheus_config(targets: dict[str, str], apiserver: str, alertmanager: str,
                      self_auth: tuple[str, str],
                      scrape_seconds: int = SCRAPE_INTERVAL_SECONDS) -> dict:
    """`self_auth`: the user and password file Prometheus scrapes itself with (its own
    endpoints are behind web.yml's basic auth too). `scrape_seconds` is also what the release
    worker waits past a canary window (its connection's extra says the same number)."""
    every = f"{scrape_seconds}s"
    return {
        "global": {"scrape_interval": every, "evaluation_interval": "15s",
                   "external_labels": {"stack": "rice-mlops"}},
        "rule_files": [f"{RULES_DIR}/*.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": "rice-serving", "scrape_timeout": f"{min(4, scrape_seconds)}s",
             "static_configs": [{"targets": [target], "labels": {"slot": slot}}
                                for slot, target in targets.items()]},
            {"job_name": "rice-webhook", "metrics_path": "/webhooks/metrics",
             "static_configs": [{"targets": [apiserver]}]},
            {"job_name": "rice-pipeline", "metrics_path": "/rice/metrics",
             "scrape_interval": "30s", "static_configs": [{"targets": [apiserver]}]},
            {"job_name": "alertmanager", "static_configs": [{"targets": [alertmanager]}]},
            {"job_name": "prometheus",
             "basic_auth": {"username": self_auth[0], "password_file": self_auth[1]},
             "static_configs": [{"targets": ["localhost:9090"]}]},
        ],
    }


def web_config(user: str, bcrypt_hash: str) -> dict:
    if not bcrypt_hash.startswith("$2"):
        raise ConfigError("htpasswd gave no bcrypt hash")
    return {"basic_auth_users": {user: bcrypt_hash}}


def smtp_from_connection(text: str) -> Smtp | None:
    """An Airflow SMTP connection, as a URI (`smtp://user:password@host:587`) or as JSON
    (`{"conn_type": "smtp", "host": ..., "port": ..., "login": ..., "password": ...,
    "extra": {"disable_tls": false}}`); "" is none. TLS as Airflow's SMTP hook does it: on
    unless the extra turns both STARTTLS and SSL off."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            fields = json.loads(text)
        except ValueError:
            raise ConfigError("RICE_ALERT_SMTP is not valid JSON (an Airflow connection: "
                              '{"conn_type": "smtp", "host": ..., "port": ...})') from None
        if not isinstance(fields, dict):
            raise ConfigError("RICE_ALERT_SMTP must be a JSON object or an smtp:// URI")
        extra = fields.get("extra") or {}
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except ValueError:
                extra = {}
        host, port = fields.get("host"), fields.get("port")
        login, password = fields.get("login") or "", fields.get("password") or ""
    else:
        parts = urlsplit(text)
        if parts.scheme not in ("smtp", "smtps"):
            raise ConfigError("RICE_ALERT_SMTP must be an smtp:// URI or an Airflow "
                              "connection's JSON")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("RICE_ALERT_SMTP has a port that is not a number") from None
        host, login = parts.hostname, unquote(parts.username or "")
        password = unquote(parts.password or "")
        extra = {key: value.lower() == "true" for key, value in
                 (item.partition("=")[::2] for item in parts.query.split("&") if item)}
    if not isinstance(host, str) or not HOST.match(host):
        raise ConfigError("RICE_ALERT_SMTP names no valid host")
    try:
        port = int(port or 25)
    except (TypeError, ValueError):
        raise ConfigError("RICE_ALERT_SMTP has a port that is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"RICE_ALERT_SMTP's port {port} is not a port number")
    tls_off = bool(extra.get("disable_tls")) and bool(extra.get("disable_ssl"))
    return Smtp(host=host, port=port, login=str(login), password=str(password),
                require_tls=not tls_off)


def emails(text: str) -> list[str]:
    found = [item.strip() for item in text.split(",") if item.strip()]
    bad = [item for item in found if not EMAIL.match(item)]
    if bad:
        raise ConfigError(f"RICE_ALERT_EMAILS holds what is not an address: {bad[:3]}")
    return found


def alertmanager_config(smtp: Smtp | None, to: list[str], sender: str) -> dict:
    route = {"receiver": "mail" if smtp and to else "none",
             "group_by": ["alertname", "slot", "dag_id"], "group_wait": "30s",
             "group_interval": "5m", "repeat_interval": "12h"}
    if not (smtp and to):
        return {"route": route, "receivers": [{"name": "none"}]}
    mail = {"to": ", ".join(to), "send_resolved": True}
    if smtp.login:
        mail |= {"auth_username": smtp.login, "auth_password_file": SMTP_PASSWORD_FILE}
    return {"global": {"smtp_smarthost": f"{smtp.host}:{smtp.port}", "smtp_from": sender,
                       "smtp_hello": "rice-mlops", "smtp_require_tls": smtp.require_tls},
            "route": route, "receivers": [{"name": "mail", "email_configs": [mail]}]}


def bcrypt_of(password: str) -> str:
    """`htpasswd -niB` with the password on stdin: the line is user:hash."""
    done = subprocess.run(["htpasswd", "-niB", "-C", "10", "prometheus"],  # noqa: S607
                          input=password + "\n", capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"htpasswd failed: {done.stderr.strip()[:200]}")
    return done.stdout.strip().partition(":")[2]


def _write(path: Path, text: str, mode: int, owner: tuple[int, int] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(partial, mode)  # whatever the umask
    if owner is not None:
        os.chown(partial, *owner)
    partial.replace(path)


def render(out: Path, env: dict[str, str], hash_password=bcrypt_of,
           owner: tuple[int, int] | None = None) -> list[str]:
    """Write every file under `out` (secrets 0640, owned by `owner`: the image's prometheus
    user), once every setting has been checked (a bad one writes nothing); what it says of
    the mail set-up, for the log."""
    password = env.get("PROMETHEUS_PASSWORD", "")
    if len(password) < 12:
        raise ConfigError("PROMETHEUS_PASSWORD must be set in .env, at least 12 characters "
                          "(it guards Prometheus's published UI and API)")
    if any(c in password for c in '\r\n"\\'):
        # One line, and nothing that ends the JSON of the release worker's connection.
        raise ConfigError("PROMETHEUS_PASSWORD must be one line without \" or \\")
    user = env.get("PROMETHEUS_USER", "prometheus")
    if not USER.match(user):
        raise ConfigError("PROMETHEUS_USER may hold only A-Z a-z 0-9 . _ - (1 to 64)")
    targets = serving_targets(env.get("RICE_SERVING_ADDRESSES", ""),
                              env.get("RICE_ROLLOUT_SLOT_PORTS", "8502,8503"))
    smtp = smtp_from_connection(env.get("RICE_ALERT_SMTP", ""))
    to = emails(env.get("RICE_ALERT_EMAILS", ""))
    sender = env.get("RICE_ALERT_FROM", "") or "rice-mlops-alerts@localhost"
    if not EMAIL.match(sender):
        raise ConfigError(f"RICE_ALERT_FROM is not an address: {sender!r}")
    scrape = env.get("PROMETHEUS_SCRAPE_SECONDS", "") or str(SCRAPE_INTERVAL_SECONDS)
    if not scrape.isdigit() or not 1 <= int(scrape) <= 60:
        raise ConfigError(f"PROMETHEUS_SCRAPE_SECONDS must be a whole number of seconds from 1 "
                          f"to 60, got {scrape!r}")
    config = prometheus_config(targets, "airflow-apiserver:8080", "alertmanager:9093",
                               (user, "/etc/prometheus/config/password"), int(scrape))
    files = {
        "prometheus/prometheus.yml": (json.dumps(config, indent=1), 0o644),
        "prometheus/web.yml": (json.dumps(web_config(user, hash_password(password))), 0o644),
        "prometheus/password": (password, 0o640),
        # For the health check's wget (GNU wgetrc: `user`, `password`), never a command line.
        "prometheus/wgetrc": (f"user = {user}\npassword = {password}\n", 0o640),
        "alertmanager/alertmanager.yml": (json.dumps(alertmanager_config(smtp, to, sender),
                                                     indent=1), 0o644),
        "alertmanager/smtp_password": (smtp.password if smtp else "", 0o640),
    }
    for name, (text, mode) in files.items():
        _write(out / name, text, mode, owner)
    if smtp and to:
        return [f"alerts are mailed to {len(to)} address(es) through {smtp.host}:{smtp.port}"]
    return ["alerts are not mailed: set RICE_ALERT_SMTP (an Airflow SMTP connection) and "
            "RICE_ALERT_EMAILS in .env; they show in Alertmanager meanwhile"]


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "/config")
    try:
        uid = int(os.environ.get("PROMETHEUS_UID", "990"))
        for line in render(out, dict(os.environ), owner=(uid, uid)):
            print(f"prometheus-init: {line}")
    except ConfigError as exc:
        print(f"prometheus-init: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
