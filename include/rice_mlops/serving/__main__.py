"""`python -m rice_mlops.serving`: serve the model in RICE_MODEL_DIR over HTTP."""

from __future__ import annotations

import logging
import os
import signal
import sys

from rice_mlops.serving.app import serve
from rice_mlops.serving.model_signature import (
    DEFAULT_PUBLIC_KEY,
    ModelSignatureError,
    verify_model_dir,
)


def main() -> int:
    logging.basicConfig(level=os.environ.get("RICE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # `docker stop` sends SIGTERM; exit promptly instead of waiting for the kill.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    model_dir = os.environ.get("RICE_MODEL_DIR", "/opt/model")
    try:  # a model that is not exactly what the pipeline signed is never served
        verify_model_dir(model_dir, os.environ.get("RICE_MODEL_PUBLIC_KEY", DEFAULT_PUBLIC_KEY))
    except ModelSignatureError as exc:
        logging.getLogger("rice_mlops.serving").critical("refusing to start: %s", exc)
        return 78  # EX_CONFIG
    serve(
        model_dir=model_dir,
        host=os.environ.get("RICE_HOST", "0.0.0.0"),
        port=int(os.environ.get("RICE_PORT", "8080")),
        max_body_bytes=int(os.environ.get("RICE_MAX_BODY_BYTES", str(10 * 1024 * 1024))),
        workers=int(os.environ.get("RICE_WORKERS", str(os.cpu_count() or 1))),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
