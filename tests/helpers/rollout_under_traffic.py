"""A rollout driven by hand on the embedded Airflow stack's serving while a steady client
calls its proxy: the stack's serving layout, the client, the images it sends, and the
rolled-back outcome with what the client saw (tests/integration/test_rollout_e2e.py)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

import httpx


def serving_layout(stack):
    from rice_mlops.core.settings import PipelineSettings
    from rice_mlops.stages.serving import layout

    return layout(PipelineSettings.from_env(stack.env))


@contextmanager
def steady_client(url: str, images: list[tuple[bytes, str]], rate: float = 20.0):
    """A user of the endpoint, apart from the rollout's own replay: a steady stream of at
    most `rate` images a second until the block ends, each on a new connection (a client kept
    alive across a proxy reload can meet HTTP's own idle-close race, which docs/rollout.md
    describes; every error seen here is the service's); yields the answers (status,
    X-Request-Id) as they come."""
    answers: list[tuple[int, str | None]] = []
    done = threading.Event()

    def call() -> None:
        with httpx.Client(timeout=30, headers={"Connection": "close"}) as session:
            while not done.wait(1 / rate):
                body, kind = images[len(answers) % len(images)]
                try:
                    answer = session.post(f"{url}/predict", content=body,
                                          headers={"Content-Type": kind})
                    answers.append((answer.status_code, answer.headers.get("x-request-id")))
                except httpx.HTTPError:
                    answers.append((0, None))

    thread = threading.Thread(target=call)
    thread.start()
    try:
        yield answers
    finally:
        done.set()
        thread.join(timeout=60)


def smoke_like(dataset: Path) -> list[tuple[bytes, str]]:
    return [(path.read_bytes(), "image/jpeg")
            for path in sorted((dataset / "test").rglob("*.jpg"))[:20]]


def rolled_back_beside_a_client(stack, dataset: Path, reference: str, version: str, plan,
                                beside=None):
    """`reference` rolled out as model `version` without the pipeline's verification while a
    steady client calls the proxy, and `beside(engine, layout, done)` runs in a thread; then
    the state must be as before and the candidate's slot empty. Returns the outcome, the
    client's answers, the candidate's slot and the statuses that were not 200 (the client's
    and the rollout's own replayed requests)."""
    from rice_mlops.release.rollout import state as st
    from rice_mlops.release.rollout.driver import Rollout
    from rice_mlops.release.rollout.engine import Engine

    layout = serving_layout(stack)
    before = st.load(layout.state_file)
    images = smoke_like(dataset)
    engine = Engine("/var/run/docker.sock", layout)
    done = threading.Event()
    helper = threading.Thread(target=beside, args=(engine, layout, done)) if beside else None
    try:
        if helper:
            helper.start()
        try:
            with steady_client(f"http://127.0.0.1:{layout.proxy_port}", images) as answers:
                outcome = Rollout(engine, plan, images).roll_out(reference, version,
                                                                 lambda ref: None)
        finally:
            done.set()
            if helper:
                helper.join(timeout=60)
        assert not outcome.served, outcome.summary
        after = st.load(layout.state_file)
        assert after.stable == before.stable and after.candidate is None
        assert engine.running_reference(before.free_slot()) is None
    finally:
        engine.close()
    assert len(answers) > 20, answers
    errors = [code for code in [status for status, _ in answers] +
              [s for s, n in outcome.client_statuses.items() for _ in range(n)] if code != 200]
    return outcome, answers, before.free_slot(), errors
