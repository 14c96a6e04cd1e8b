"""`python -m rice_mlops.serving`: serve the model in RICE_MODEL_DIR over HTTP."""

from __future__ import annotations

import logging
import sys

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
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
