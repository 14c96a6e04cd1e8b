"""The server's settings: read once from the environment at start-up, then frozen.

Every resource a client can hold has a bound here, so an operator can see and change it. The
serving package ships alone in the image, so it keeps this parser of its own rather than
importing the pipeline's (`rice_mlops.core.readers`), but in the same style: unset or empty means
the default, and a refusal says which variable, what it holds, what it accepts and what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from rice_mlops.serving.model_signature import DEFAULT_PUBLIC_KEY


class SettingsError(ValueError):
    """A variable holds a value the server cannot start with; the message names it."""


@dataclass(frozen=True)
class Settings:
    model_dir: str = "/opt/model"
    host: str = "0.0.0.0"
    port: int = 8080
    # Interpreters, and requests decoding or predicting at once: memory is bounded by this
    # count times the largest accepted image, not by the number of clients.
    inference_slots: int = 2
    # Requests admitted at once (reading, waiting for a slot, predicting); more get 503.
    max_requests: int = 64
    # Open connections; more are closed as soon as they are accepted.
    max_connections: int = 512
    retry_after_seconds: int = 1
    max_body_bytes: int = 8 * 1024 * 1024
    # Body bytes held by all requests together (read, or waiting for a slot), counted as they
    # arrive, never as declared; over it, 503.
    max_buffered_bytes: int = 32 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_pixels: int = 2048 * 2048
    multipart_max_parts: int = 8
    multipart_max_header_bytes: int = 2048
    keep_alive_timeout: float = 5.0
    header_timeout: float = 5.0
    body_timeout: float = 30.0
    # From the headers to the body's first byte, then at least this many bytes a second on
    # average; slower bodies are closed before `body_timeout` (an idle client holds nothing).
    first_byte_timeout: float = 2.0
    min_body_rate: int = 64 * 1024
    # Below `docker stop`'s 10 s, so requests in flight finish before the SIGKILL.
    graceful_timeout: float = 8.0
    log_level: str = "INFO"
    # The prediction log (prediction_log.py): off when no directory is given. At most
    # (backups + 1) x max_bytes on disk; a record that finds the queue full is dropped.
    prediction_log_dir: str = ""
    prediction_log_max_bytes: int = 16 * 1024 * 1024
    prediction_log_backups: int = 4
    prediction_log_queue: int = 10_000
    # The labelling queue (labelling.py): off unless a directory is given and the rate is
    # above 0. A sampled image and its record are written there, up to the two caps.
    labelling_dir: str = ""
    labelling_sample_rate: float = 0.0
    labelling_max_images: int = 1000
    labelling_max_bytes: int = 256 * 1024 * 1024
    # Test-only: every prediction waits this long first, so the rollout's tests can serve a
    # slow model from the real image (unset in every deployment).
    test_added_latency_ms: int = 0
    # The pipeline's public key: a model whose signature it does not verify is never served.
    model_public_key: str = DEFAULT_PUBLIC_KEY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """`RICE_MODEL_DIR`, `RICE_MODEL_PUBLIC_KEY`, `RICE_HOST`, `RICE_PORT`,
        `RICE_LOG_LEVEL` and `RICE_SERVING_<FIELD>` for every other field (for example
        `RICE_SERVING_MAX_BODY_BYTES`)."""
        environ = os.environ if environ is None else environ
        defaults = cls()
        values = {}
        for field in fields(cls):
            name = _ENV_NAMES.get(field.name, f"RICE_SERVING_{field.name.upper()}")
            raw = environ.get(name, "").strip()
            if not raw:
                continue
            default = getattr(defaults, field.name)
            values[field.name] = _parsed(name, raw, default, zero_ok=field.name in _ZERO_OK,
                                         high=_HIGHEST.get(field.name))
        if "inference_slots" not in values:
            values["inference_slots"] = max(1, min(os.cpu_count() or 1, 4))
        return cls(**values)

    def env_name(self, field_name: str) -> str:
        """The variable that sets `field_name`."""
        return _ENV_NAMES.get(field_name, f"RICE_SERVING_{field_name.upper()}")


_ENV_NAMES = {"model_dir": "RICE_MODEL_DIR", "model_public_key": "RICE_MODEL_PUBLIC_KEY",
              "host": "RICE_HOST", "port": "RICE_PORT",
              "log_level": "RICE_LOG_LEVEL"}


_ZERO_OK = {"port", "labelling_sample_rate"}
_HIGHEST = {"labelling_sample_rate": 1.0}  # a share of requests


def _parsed(name: str, raw: str, default, zero_ok: bool, high: float | None = None):
    """`raw` as the type of `default`; a number must be finite and positive (or 0 with
    `zero_ok`), and at most `high` when given."""
    kind = type(default)
    if kind is str:
        return raw
    what = "an integer" if kind is int else "a number"
    accepts = f"{what} {'≥' if zero_ok else '>'} 0" + (f" and ≤ {high:g}" if high else "")
    todo = f"change it, or unset it for the default ({default})"
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {what}; it accepts {accepts}: {todo}"
                            ) from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or \
            (high is not None and value > high):
        raise SettingsError(f"{name}={raw} is out of bounds; it accepts {accepts}: {todo}")
    return value
