"""The server's settings: read once from the environment at start-up, then frozen.

Every resource a client can hold has a bound here, so an operator can see and change it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """`RICE_MODEL_DIR`, `RICE_HOST`, `RICE_PORT`, `RICE_LOG_LEVEL` and
        `RICE_SERVING_<FIELD>` for every other field (for example
        `RICE_SERVING_MAX_BODY_BYTES`)."""
        environ = os.environ if environ is None else environ
        defaults = cls()
        values = {}
        for field in fields(cls):
            name = _ENV_NAMES.get(field.name, f"RICE_SERVING_{field.name.upper()}")
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            kind = type(getattr(defaults, field.name))
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
            if kind in (int, float) and value <= 0 and field.name != "port":
                raise ValueError(f"{name} must be positive, got {raw!r}")
            values[field.name] = value
        if "inference_slots" not in values:
            values["inference_slots"] = max(1, min(os.cpu_count() or 1, 4))
        return cls(**values)

    def env_name(self, field_name: str) -> str:
        return _ENV_NAMES.get(field_name, f"RICE_SERVING_{field_name.upper()}")


_ENV_NAMES = {"model_dir": "RICE_MODEL_DIR", "host": "RICE_HOST", "port": "RICE_PORT",
              "log_level": "RICE_LOG_LEVEL"}
