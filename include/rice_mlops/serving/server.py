"""uvicorn wired to the settings: the bounded protocol, keep-alive and graceful-stop timeouts."""

from __future__ import annotations

import logging
import signal
import time

import uvicorn

from rice_mlops.serving.app import SERVER_VERSION, ServingApp
from rice_mlops.serving.classifier import Classifier
from rice_mlops.serving.protocol import bounded_protocol
from rice_mlops.serving.settings import Settings

log = logging.getLogger("rice_mlops.serving")


def make_server(settings: Settings, classifier: Classifier | None = None
                ) -> tuple[uvicorn.Server, ServingApp]:
    classifier = classifier or Classifier(settings.model_dir, workers=settings.inference_slots)
    app = ServingApp(classifier, settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, http=bounded_protocol(settings),
        lifespan="off", interface="asgi3", access_log=False, log_config=None,
        log_level=settings.log_level.lower(), server_header=False,
        headers=[("server", SERVER_VERSION)],
        timeout_keep_alive=settings.keep_alive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]
    )
    return uvicorn.Server(config), app


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT: then stop accepting, let requests in flight finish
    within `graceful_timeout`, and return (a requested stop is a clean exit)."""
    started = time.perf_counter()
    server, app = make_server(settings)
    meta = app.classifier.metadata
    log.info("serving %s v%s on %s:%d (%d inference slots, ready in %.2fs)",
             meta.get("model_name", "model"), meta.get("model_version", "?"), settings.host,
             settings.port, settings.inference_slots, time.perf_counter() - started)
    # uvicorn re-raises the stop signal once it has shut down, to the handler it found: with
    # the default one the process would die of SIGTERM (exit 143) after a clean stop.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    try:
        server.run()
    finally:
        app.close()
    log.info("stopped")


def _stopped(signum, frame) -> None:
    log.info("stopped by %s", signal.Signals(signum).name)
