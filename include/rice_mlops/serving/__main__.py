"""`python -m rice_mlops.serving`: serve the model in RICE_MODEL_DIR over HTTP."""

from __future__ import annotations

import logging
import sys

from rice_mlops.serving.model_signature import ModelSignatureError, verify_model_dir
from rice_mlops.serving.server import serve
from rice_mlops.serving.settings import Settings


def main() -> int:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"rice-serving: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # a model that is not exactly what the pipeline signed is never served
        verify_model_dir(settings.model_dir, settings.model_public_key)
    except ModelSignatureError as exc:
        logging.getLogger("rice_mlops.serving").critical("refusing to start: %s", exc)
        return 78  # EX_CONFIG
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
