"""The serving image's budgets: its size and its p50 latency, measured after the smoke test.

The smoke test's operator measures both from outside the smoke script: the size from the
engine's image record, the latency by running the built image once more (no network) with
`PROBE`, a constant script that starts the server, times `/predict` over the smoke images and
prints one JSON line. Over either budget the image is not pushed.
"""

from __future__ import annotations

import json
import statistics

ROUNDS = 5

# Runs inside the built image (python3 -c): standard library only; nothing read from XCom.
PROBE = r"""
import http.client, json, os, subprocess, sys, time
smoke, port, rounds = sys.argv[1], 18081, int(sys.argv[2])
env = {**os.environ, "RICE_HOST": "127.0.0.1", "RICE_PORT": str(port), "RICE_WORKERS": "1"}
server = subprocess.Popen([sys.executable, "-m", "rice_mlops.serving"], env=env)
def call(method, path, body=b"", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse(); r.read(); return r.status
    finally:
        c.close()
try:
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None: sys.exit(f"probe: server exited with {server.returncode}")
        try:
            if call("GET", "/ping") == 200: break
        except OSError:
            if time.monotonic() > deadline: sys.exit("probe: no /ping")
            time.sleep(0.05)
    expected = json.load(open(os.path.join(smoke, "expected.json")))
    files = expected.get("latency_images") or [i["file"] for i in expected["images"]]
    bodies = [open(os.path.join(smoke, f), "rb").read() for f in files]
    call("POST", "/predict", bodies[0], {"Content-Type": "image/jpeg"})  # warm-up
    seconds = []
    for _ in range(rounds):
        for body in bodies:
            start = time.perf_counter()
            status = call("POST", "/predict", body, {"Content-Type": "image/jpeg"})
            seconds.append(time.perf_counter() - start)
            if status != 200: sys.exit(f"probe: /predict answered {status}")
    print(json.dumps({"latencies_ms": [round(1000 * s, 3) for s in seconds]}), flush=True)
finally:
    server.terminate(); server.wait(timeout=10)
"""


class BudgetError(ValueError):
    """The probe's output is not what PROBE prints."""


def parse_probe(output: str) -> list[float]:
    """The latencies (ms) from the probe's last output line."""
    # The server's own log lines share the container's output: take the last result line.
    results = [line for line in (output or "").splitlines()
               if line.strip().startswith('{"latencies_ms"')]
    try:
        values = json.loads(results[-1])["latencies_ms"]
    except (IndexError, KeyError, TypeError, ValueError):
        raise BudgetError(f"the latency probe printed no result: {output[-300:]!r}") from None
    if not values or not all(isinstance(v, int | float) and v >= 0 for v in values):
        raise BudgetError("the latency probe printed no valid latencies")
    return [float(v) for v in values]


def check(*, size_bytes: int, latencies_ms: list[float], max_image_mb: float,
          max_p50_ms: float) -> dict:
    """The budget decision with its numbers; `passed` False names every budget exceeded."""
    size_mb = size_bytes / 1_000_000
    p50 = statistics.median(latencies_ms)
    ordered = sorted(latencies_ms)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    over = []
    if size_mb > max_image_mb:
        over.append(f"image size {size_mb:.1f} MB is over the budget {max_image_mb:.1f} MB "
                    "(RICE_MAX_IMAGE_MB)")
    if p50 > max_p50_ms:
        over.append(f"p50 latency {p50:.2f} ms is over the budget {max_p50_ms:.2f} ms "
                    "(RICE_MAX_P50_MS)")
    reason = "; ".join(over) or (f"image {size_mb:.1f} MB <= {max_image_mb:.1f} MB, p50 "
                                 f"{p50:.2f} ms <= {max_p50_ms:.2f} ms")
    return {"passed": not over, "reason": reason, "image_mb": round(size_mb, 2),
            "p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "requests": len(latencies_ms),
            "max_image_mb": max_image_mb, "max_p50_ms": max_p50_ms}
