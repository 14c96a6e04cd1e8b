"""Before a remote worker takes tasks: does the broker answer this worker, with its password,
over TLS it trusts? (docker-compose.worker.yaml runs it before `airflow celery worker`.)

Celery itself retries a refused login forever, one "Cannot connect" line every few seconds,
with the worker up and looking healthy to whoever glances at `docker ps`. A wrong password or
CA is a configuration error, not an outage: this stops the worker with one line that says
which setting is wrong. An unreachable broker (the control plane restarting) is waited for.

    python -m rice_mlops.operations.broker_check      # reads AIRFLOW__CELERY__BROKER_URL

Exit 0 when the broker answered PING; 78 (EX_CONFIG) when it refused the password or the TLS
certificate did not verify; 69 (EX_UNAVAILABLE) when it could not be reached within the
wait. Nothing is taken from the queue either way, so no task is lost. The URL's password is
never printed.
"""

from __future__ import annotations

import os
import sys
import time

from rice_mlops.core.readers import SettingsError

EX_CONFIG = 78
EX_UNAVAILABLE = 69
URL_VARIABLE = "AIRFLOW__CELERY__BROKER_URL"  # Airflow's own setting, as the worker reads it


def _fail(code: int, message: str) -> int:
    print(f"broker_check: {message}", file=sys.stderr, flush=True)
    return code


def check(env=os.environ, sleep=time.sleep, clock=time.monotonic) -> int:
    """The exit status (module docstring) for the broker URL in `env`."""
    import redis

    from rice_mlops.operations.tool_settings import ToolSettings

    url = env.get(URL_VARIABLE, "")
    if not url:
        return _fail(EX_CONFIG, f"{URL_VARIABLE} is not set: this worker has no broker")
    try:
        wait = ToolSettings.from_env(env).broker_wait_seconds
        # redis-py parses the URL (scheme, password, the TLS query settings), not this module.
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    except SettingsError as exc:
        return _fail(EX_CONFIG, str(exc))
    except ValueError as exc:
        # redis-py's messages name the scheme or option, never the password.
        return _fail(EX_CONFIG, f"{URL_VARIABLE} is not a usable Redis URL ({exc})")
    kwargs = client.connection_pool.connection_kwargs
    where = f"{kwargs.get('host')}:{kwargs.get('port')}"
    deadline = clock() + wait
    while True:
        try:
            client.ping()
        except redis.AuthenticationError:
            return _fail(EX_CONFIG, f"the broker at {where} refused this worker's password: set "
                         "REDIS_PASSWORD in this machine's env file to the control plane's "
                         "REDIS_PASSWORD. The worker does not start; queued tasks wait for a "
                         "worker that can log in.")
        except redis.ConnectionError as exc:
            text = str(exc)
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
                return _fail(EX_CONFIG, f"the broker at {where} has a certificate this worker's "
                             "CA does not vouch for (or not for that name): set RICE_CA_FILE "
                             "to the control plane's DIR/worker/ca.crt from scripts/tls, and "
                             "RICE_CONTROL_PLANE_HOST to a name on its certificate.")
            if clock() >= deadline:
                return _fail(EX_UNAVAILABLE, f"no answer from the broker at {where} within "
                             f"{wait:.0f} s ({type(exc).__name__}: {text[:200]}): check "
                             "RICE_CONTROL_PLANE_ADDRESS and that the control plane runs its "
                             "`publish` profile on that address.")
            sleep(2.0)
        else:
            print(f"broker_check: the broker at {where} answered", file=sys.stderr, flush=True)
            return 0
        finally:
            client.connection_pool.disconnect()


def main() -> int:
    return check()


if __name__ == "__main__":
    sys.exit(main())
