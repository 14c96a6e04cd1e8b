"""The rollout (issue 22): its wall time, the client's latency through the proxy against
direct, and the errors clients see during a rollout and a rollback on demand.

    scripts/docker-engine start
    .venv/bin/python benchmarks/rollout.py --stable HOST/rice-classifier@sha256:... \\
        --candidate HOST/rice-classifier@sha256:... [--images ../shared/rice/test]

Two serving images by digest (two `make demo` runs push two; they must be in the local engine
or pullable without credentials). Starts its own proxy and slots (names `rice-bench`, ports
from --port), deploys --stable, then:
1. 300 sequential /predict calls straight to the stable slot, then 300 through the proxy:
   p50/p99 of each (what the proxy adds);
2. a client calling the proxy without pause while --candidate rolls out (shadow, 10/50/100 %,
   the settings' defaults: 10 s windows): the rollout's wall time, the client's errors;
3. the same client while a rollback on demand puts --stable back at 100 %.
Signature verification is not part of the figure (`verify` is the pipeline's; here the images
may carry no attestations). Appends to benchmarks/results/rollout.jsonl.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "include"))


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
            "n": len(ordered)}


def timed_calls(url: str, images: list[tuple[bytes, str]], count: int) -> list[float]:
    took = []
    with httpx.Client(timeout=30) as client:
        for index in range(count):
            body, kind = images[index % len(images)]
            started = time.perf_counter()
            answer = client.post(f"{url}/predict", content=body, headers={"Content-Type": kind})
            took.append(time.perf_counter() - started)
            answer.raise_for_status()
    return took


class Caller:
    """A client calling the proxy without pause until stopped; counts answers by status."""

    def __init__(self, url: str, images: list[tuple[bytes, str]]):
        self.url, self.images, self.statuses = url, images, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            index = 0
            while not self._stop.is_set():
                body, kind = self.images[index % len(self.images)]
                index += 1
                try:
                    status = client.post(f"{self.url}/predict", content=body,
                                         headers={"Content-Type": kind}).status_code
                except httpx.HTTPError:
                    status = 0
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    from results_log import record

    from rice_mlops.release.rollout.driver import Plan, Rollout
    from rice_mlops.release.rollout.engine import Engine, Layout
    from rice_mlops.release.rollout.verdicts import Budgets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stable", required=True)
    parser.add_argument("--candidate", required=True)
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "rice" / "test")
    parser.add_argument("--port", type=int, default=18501)
    parser.add_argument("--proxy-image", default="rice-serving-proxy:local")
    parser.add_argument("--min-agreement", type=float, default=0.98)
    args = parser.parse_args()

    images = [(path.read_bytes(), "image/jpeg")
              for path in sorted(args.images.rglob("*.jpg"))[::25][:40]]
    root = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    layout = Layout(root=root / "serving", proxy_image=args.proxy_image, name="rice-bench",
                    proxy_port=args.port, slot_ports=(args.port + 1, args.port + 2))
    engine = Engine("/var/run/docker.sock", layout)
    plan = Plan(budgets=Budgets(min_agreement=args.min_agreement))
    rollout = Rollout(engine, plan, images)
    proxy = f"http://127.0.0.1:{layout.proxy_port}"
    no_check = lambda reference: None  # noqa: E731 - see the module's docstring
    try:
        first = rollout.roll_out(args.stable, "1", no_check)
        assert first.served, first.summary
        stable_port = layout.port(first.state.stable.slot)
        timed_calls(proxy, images, 20)  # warm both paths
        direct = percentiles(timed_calls(f"http://127.0.0.1:{stable_port}", images, 300))
        proxied = percentiles(timed_calls(proxy, images, 300))
        with Caller(proxy, images) as during_rollout:
            started = time.perf_counter()
            out = Rollout(engine, plan, images).roll_out(args.candidate, "2", no_check)
            rollout_seconds = time.perf_counter() - started
        with Caller(proxy, images) as during_rollback:
            started = time.perf_counter()
            back = Rollout(engine, plan, images).roll_back_to(args.stable, "1", no_check,
                                                              "benchmark: rollback on demand")
            rollback_seconds = time.perf_counter() - started
    finally:
        engine.stop_all()
        engine.close()
    record("rollout", {
        "stable": args.stable, "candidate": args.candidate,
        "direct": direct, "through_proxy": proxied,
        "rollout": {"summary": out.summary, "seconds": round(rollout_seconds, 1),
                    "verdicts": [v.reason for v in out.verdicts],
                    "client_statuses": during_rollout.statuses,
                    "replay_statuses": out.client_statuses},
        "rollback": {"summary": back.summary, "seconds": round(rollback_seconds, 1),
                     "client_statuses": during_rollback.statuses},
    })
    return 0 if out.served and back.served else 1


if __name__ == "__main__":
    sys.exit(main())
