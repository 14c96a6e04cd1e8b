"""How fast /invocations' JSON decoding answers: the usual body (one 128x128 image as
`json.dumps` of random floats, about 1 MB) and every hostile body of
tests/helpers/hostile_json.py (each at most 8 MiB), in process, no server.

    .venv/bin/python -m benchmarks.json_decode [--repeat 20]

Targets (issue 11, once asserted in the unit tests): the usual body decodes in a few
milliseconds (median < 20 ms), and every hostile body is refused in under 2 s. Prints the
figures, appends them to benchmarks/results/json_decode.jsonl, and exits 1 when a target is
missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))
sys.path.insert(0, str(REPO))

USUAL_MEDIAN_S = 0.02
HOSTILE_MAX_S = 2.0


def _seconds(call, repeat: int) -> list[float]:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


def main(argv: list[str] | None = None) -> int:
    from benchmarks.results_log import record
    from rice_mlops.serving.decode import BadRequest, pixels_from_json
    from tests.helpers.hostile_json import HOSTILE

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)

    pixels = (np.random.default_rng(0).random((1, 128, 128, 3)) * 255).tolist()
    usual = json.dumps({"instances": pixels}).encode()
    pixels_from_json(usual)  # warm
    usual_timings = _seconds(lambda: pixels_from_json(usual), args.repeat)

    def refuse(body: bytes) -> None:
        try:
            pixels_from_json(body)
        except BadRequest:
            return
        raise AssertionError("a hostile body was accepted")

    hostile = {}
    for name, (make, _) in sorted(HOSTILE.items()):
        body = make()
        hostile[name] = max(_seconds(lambda body=body: refuse(body), 3))
    worst = max(hostile, key=hostile.get)
    values = {
        "usual_body_bytes": len(usual),
        "usual_p50_ms": round(statistics.median(usual_timings) * 1000, 2),
        "usual_max_ms": round(max(usual_timings) * 1000, 2),
        "hostile_bodies": len(hostile),
        "hostile_worst": worst,
        "hostile_worst_ms": round(hostile[worst] * 1000, 1),
        "hostile_ms": {name: round(s * 1000, 1) for name, s in hostile.items()},
    }
    record("json_decode", values)
    missed = []
    if statistics.median(usual_timings) >= USUAL_MEDIAN_S:
        missed.append(f"usual body median {values['usual_p50_ms']} ms >= 20 ms")
    if hostile[worst] >= HOSTILE_MAX_S:
        missed.append(f"{worst} refused in {values['hostile_worst_ms']} ms >= 2 s")
    for line in missed:
        print("target missed:", line, file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
