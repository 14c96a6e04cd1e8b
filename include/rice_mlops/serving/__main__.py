"""`python -m rice_mlops.serving`: serve the model in RICE_MODEL_DIR over HTTP."""

from __future__ import annotations

import logging
import os
import signal
import sys

from rice_mlops.serving.app import serve


def main() -> int:
    logging.basicConfig(level=os.environ.get("RICE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # `docker stop` sends SIGTERM; exit promptly instead of waiting for the kill.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(
        model_dir=os.environ.get("RICE_MODEL_DIR", "/opt/model"),
        host=os.environ.get("RICE_HOST", "0.0.0.0"),
        port=int(os.environ.get("RICE_PORT", "8080")),
        max_body_bytes=int(os.environ.get("RICE_MAX_BODY_BYTES", str(10 * 1024 * 1024))),
        workers=int(os.environ.get("RICE_WORKERS", str(os.cpu_count() or 1))),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
