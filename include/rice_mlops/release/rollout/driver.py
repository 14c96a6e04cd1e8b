"""A rollout, start to end: verify, start the candidate beside stable, shadow, canary steps,
then serve it, or roll back. One at a time (a lock in the serving directory; the DAG adds a
pool of one), and every step is recorded in the serving state before it takes effect, so a
crash at any point is rolled back by the next rollout or by `rice_rollback`.

The decisions are `verdicts`' on measured numbers: the servers' prediction logs joined by the
proxy's request id, and each canary window's answers and p99 from Prometheus where the stack
has one, else from the servers' own `/metrics` before and after it (`windows`). Where live
traffic is too thin, the release zone replays its smoke set through the proxy, so every stage
sees at least the requests it needs.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rice_mlops.core.settings import rising_steps
from rice_mlops.monitoring.log_reader import LOG_FILE, LogFileError, log_lines
from rice_mlops.release.rollout import state as st
from rice_mlops.release.rollout.engine import PROXY_RUN_DIR, DeployError, Engine
from rice_mlops.release.rollout.proxy_config import ProxyLimits, Routing, render
from rice_mlops.release.rollout.state import RolloutRefused
from rice_mlops.release.rollout.verdicts import (
    Budgets,
    MetricsError,
    Verdict,
    canary_verdict,
    parse_scrape,
    predictions_by_request,
    shadow_verdict,
    step_minimum,
    window,
)
from rice_mlops.release.rollout.windows import DirectMetrics, WindowSource

log = logging.getLogger(__name__)
MAX_WINDOWS_PER_STEP = 4


@dataclass(frozen=True)
class Plan:
    steps: tuple[int, ...] = (10, 50, 100)
    window_seconds: float = 10.0
    budgets: Budgets = field(default_factory=Budgets)
    replay_rate: float = 20.0  # requests a second the release zone adds through the proxy
    replay_concurrency: int = 2

    def __post_init__(self) -> None:
        if not rising_steps(self.steps):
            raise ValueError(f"canary steps must rise from above 0 to 100, got {self.steps}")
        if not 0 < self.window_seconds <= 600:
            raise ValueError("the canary window must be from 0 to 600 seconds")
        if not 0 < self.replay_rate <= 1000:
            raise ValueError("the replay rate must be from 0 to 1000 requests a second")


@dataclass(frozen=True)
class Outcome:
    served: bool
    summary: str  # one line for the run note: "serving v7 at 100 %" / "rolled back v7 ..."
    verdicts: tuple[Verdict, ...]
    state: st.ServingState
    seconds: float
    client_statuses: dict[int, int]  # what the replayed traffic got, all stages together


class Replayer:
    """Posts the smoke set's images (bytes, content type) to the proxy's /predict, as a
    client would, at most `rate` a second: the replay measures the service without loading
    it."""

    def __init__(self, url: str, images: Sequence[tuple[bytes, str]], rate: float,
                 concurrency: int):
        self.url, self.images, self.concurrency = url, list(images), concurrency
        self.interval = 1.0 / rate
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()

    def run(self, *, count: int | None = None, seconds: float | None = None) -> int:
        """Send `count` requests, or for `seconds`; returns how many were sent."""
        if not self.images:
            raise RolloutRefused("no smoke images to measure the rollout with")
        deadline = time.monotonic() + seconds if seconds else None
        sent = [0]
        next_at = [time.monotonic()]

        def worker(offset: int) -> None:
            # A new connection per request, as a client arriving fresh: a proxy reload closes
            # idle kept-alive connections, and a request sent on one at that instant fails by
            # HTTP's own race, which is no measure of the service (the CI run of 2026-12-03
            # counted one such 0 against a rollback).
            with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:
                index = offset
                while True:
                    with self._lock:
                        if count is not None and sent[0] >= count:
                            return
                        sent[0] += 1
                        at, next_at[0] = next_at[0], max(next_at[0], time.monotonic()) + \
                            self.interval
                    time.sleep(max(0.0, at - time.monotonic()))
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    body, content_type = self.images[index % len(self.images)]
                    index += self.concurrency
                    try:
                        status = client.post(f"{self.url}/predict", content=body,
                                             headers={"Content-Type": content_type}).status_code
                    except httpx.HTTPError:
                        status = 0  # no answer at all
                    with self._lock:
                        self.statuses[status] += 1

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sent[0]


class Rollout:
    def __init__(self, engine: Engine, plan: Plan, images: Sequence[tuple[bytes, str]],
                 registry_auth: dict | None = None, windows: WindowSource | None = None):
        self.engine, self.layout, self.plan = engine, engine.layout, plan
        self.registry_auth = registry_auth
        # Where canary windows are measured: Prometheus where the stack has one, else the
        # servers' own /metrics; the verdict is the same function either way.
        self.windows = windows or DirectMetrics(self._scrape)
        self.proxy_url = self.layout.proxy_url
        self.replayer = Replayer(self.proxy_url, images, plan.replay_rate,
                                 plan.replay_concurrency)
        self._generation = 0

    # --- the entry points ---------------------------------------------------------------------

    def roll_out(self, reference: str, model_version: str,
                 verify: Callable[[str], None]) -> Outcome:
        """Serve `reference` (model `model_version`) if every stage passes; `verify` raises
        when its signature and attestations do not verify, and then nothing starts."""
        started = time.monotonic()
        with self._locked():
            current = self.recover()
            candidate_name = f"v{model_version}"
            try:
                verify(reference)
            except Exception as exc:  # whatever the verifier raises, nothing starts
                raise RolloutRefused(f"{candidate_name} ({reference}) does not verify, so it "
                                     f"was not started: {exc}") from None
            if current.stable is None:
                return self._first(reference, model_version, started)
            if current.stable.reference == reference:
                return self._outcome(True, f"{candidate_name} already serves at 100 %", (),
                                     current, started)
            slot = current.free_slot()
            deployment = st.Deployment(slot, reference, model_version)
            current = self._record(current.with_candidate(deployment, "shadow", 0,
                                                          f"starting {candidate_name}"))
            verdicts: list[Verdict] = []
            try:
                self.engine.start_server(slot, reference, self.registry_auth)
                verdicts.append(self._shadow(current))
                if verdicts[-1].passed:
                    for percent in self.plan.steps:
                        current = self._record(current.with_candidate(
                            deployment, "canary", percent, f"canary {percent} %"))
                        verdicts.append(self._canary(current, percent))
                        if not verdicts[-1].passed:
                            break
            except (DeployError, RolloutRefused) as exc:  # rolled back below, like a verdict
                verdicts.append(Verdict(False, str(exc).splitlines()[0], {}))
            if not verdicts[-1].passed:
                reason = verdicts[-1].reason
                where = f" at {current.candidate_percent} %" if current.phase == "canary" \
                    else " in shadow"
                summary = f"rolled back {candidate_name}{where}: {reason}"
                return self._outcome(False, summary, tuple(verdicts),
                                     self._roll_back(current, summary), started)
            return self._outcome(True, f"serving {candidate_name} at 100 %", tuple(verdicts),
                                 self._finish(current, f"serving {candidate_name}"), started)

    def roll_back_to(self, reference: str, model_version: str,
                     verify: Callable[[str], None], why: str) -> Outcome:
        """On demand: `reference` at 100 % at once (no canary), once it verifies."""
        started = time.monotonic()
        with self._locked():
            current = self.recover()
            verify(reference)
            if current.stable and current.stable.reference == reference:
                return self._outcome(True, f"v{model_version} already serves", (), current,
                                     started)
            slot = current.free_slot()
            deployment = st.Deployment(slot, reference, model_version)
            current = self._record(current.with_candidate(deployment, "canary", 100, why))
            try:
                self.engine.start_server(slot, reference, self.registry_auth)
            except DeployError as exc:
                summary = f"could not roll back to v{model_version}: {exc}"
                return self._outcome(False, summary, (), self._roll_back(current, summary),
                                     started)
            return self._outcome(True, f"rolled back to v{model_version} at 100 % ({why})", (),
                                 self._finish(current, why), started)

    def restore(self) -> st.ServingState:
        """After the serving containers were lost (a new engine, a pruned host): the proxy and
        the stable container of the state started again, under the rollout's lock."""
        with self._locked():
            return self.recover()

    def recover(self) -> st.ServingState:
        """After a crash or a restart of the whole stack: what the state says serves, serves.
        A rollout found half-done is rolled back (never two candidates at once)."""
        current = st.load(self.layout.state_file)
        if current.candidate is not None:
            current = self._roll_back(current, "superseded: a rollout was interrupted; "
                                      "rolled back to stable")
        if current.stable is not None:
            if self.engine.running_reference(current.stable.slot) != current.stable.reference:
                self.engine.start_server(current.stable.slot, current.stable.reference,
                                         self.registry_auth, fresh_log=False)
            self._route(Routing.stable_only(self.layout.port(current.stable.slot)))
        return current

    # --- stages -------------------------------------------------------------------------------

    def _first(self, reference: str, model_version: str, started: float) -> Outcome:
        """Nothing serves yet: the candidate must answer the smoke set without a 5xx."""
        deployment = st.Deployment(st.SLOTS[0], reference, model_version)
        current = self._record(st.ServingState().with_candidate(deployment, "canary", 100,
                                                                "first deployment"))
        self.engine.start_server(deployment.slot, reference, self.registry_auth)
        self._route(Routing.stable_only(self.layout.port(deployment.slot)))
        before = self._scrape(deployment.slot)
        self.replayer.run(count=self.plan.budgets.min_requests)
        measured = window(before, self._scrape(deployment.slot))
        verdict = canary_verdict(measured, None, self.plan.budgets, 100)
        if not verdict.passed:
            self.engine.stop_server(deployment.slot)
            summary = f"v{model_version} not served (first deployment): {verdict.reason}"
            return self._outcome(False, summary, (verdict,),
                                 self._record(st.ServingState(note=summary)), started)
        return self._outcome(True, f"serving v{model_version} at 100 % (first deployment)",
                             (verdict,), self._record(current.finished("first deployment")),
                             started)

    def _shadow(self, current: st.ServingState) -> Verdict:
        stable, candidate = current.stable, current.candidate
        self._route(Routing(self.layout.port(stable.slot), self.layout.port(candidate.slot),
                            0, mirror=True))
        before = self._scrape(candidate.slot)
        sent = self.replayer.run(count=self.plan.budgets.min_requests + 10)
        # The mirrored copies are answered after the clients' (a slow candidate much later):
        # measure once the candidate has answered as many, or nginx has given up on them.
        deadline = time.monotonic() + ProxyLimits().mirror_timeout_seconds + 1
        try:
            while True:
                measured = window(before, self._scrape(candidate.slot))
                if measured.requests >= sent or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        except (MetricsError, httpx.HTTPError) as exc:
            return Verdict(False, f"shadow: the candidate's /metrics failed: "
                           f"{type(exc).__name__}: {exc}", {})
        time.sleep(0.3)  # its log thread writes each line just after the answer
        return shadow_verdict(self._predictions(stable.slot), self._predictions(candidate.slot),
                              measured, self.plan.budgets)

    def _canary(self, current: st.ServingState, percent: int) -> Verdict:
        stable, candidate = current.stable, current.candidate
        self._route(Routing(self.layout.port(stable.slot), self.layout.port(candidate.slot),
                            percent))
        needed = step_minimum(self.plan.budgets, percent)
        slots = (candidate.slot, stable.slot)
        try:
            mark = self.windows.begin(slots)
            # Replay a window at a time until the step has its answers (a loaded host replays
            # slower than the rate), at most MAX_WINDOWS_PER_STEP windows.
            for _ in range(MAX_WINDOWS_PER_STEP):
                self.replayer.run(seconds=self.plan.window_seconds)
                measured = self.windows.end(mark, slots)
                if measured[candidate.slot].requests >= needed:
                    break
        except (MetricsError, httpx.HTTPError) as exc:
            return Verdict(False, f"at {percent} %: {self.windows.name} failed: "
                           f"{type(exc).__name__}: {exc}", {"percent": percent})
        return canary_verdict(measured[candidate.slot], measured[stable.slot],
                              self.plan.budgets, percent)

    def _finish(self, current: st.ServingState, note: str) -> st.ServingState:
        self._route(Routing.stable_only(self.layout.port(current.candidate.slot)))
        old = current.stable
        finished = self._record(current.finished(note))
        if old is not None:
            self.engine.stop_server(old.slot)
        return finished

    def _roll_back(self, current: st.ServingState, note: str) -> st.ServingState:
        if current.stable is not None:
            self._route(Routing.stable_only(self.layout.port(current.stable.slot)))
        if current.candidate is not None:
            self.engine.stop_server(current.candidate.slot)
        return self._record(current.rolled_back(note))

    # --- helpers ------------------------------------------------------------------------------

    def _route(self, routing: Routing) -> None:
        """Write the proxy's configuration, reload, and wait until the new workers answer."""
        self._generation = int(time.time() * 1000) % 10**12
        conf_dir = self.layout.proxy_conf_dir
        conf_dir.mkdir(parents=True, exist_ok=True)
        text = render(routing, listen_host=self.layout.listen_host,
                      listen_port=self.layout.proxy_port, run_dir=Path(PROXY_RUN_DIR),
                      generation=self._generation, upstream_hosts=self.layout.upstream_hosts())
        staged = conf_dir / ".nginx.conf.new"
        staged.write_text(text)
        staged.chmod(0o644)
        staged.replace(conf_dir / "nginx.conf")
        self.engine.ensure_proxy()
        self.engine.reload_proxy()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{self.proxy_url}/ping", timeout=2)
                if answer.headers.get("x-rice-routing") == str(self._generation):
                    log.info("proxy: %s", routing.describe())
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise DeployError(f"the proxy did not take the new routing ({routing.describe()}) "
                          "within 15 s")

    def _scrape(self, slot: str):
        answer = httpx.get(f"{self.layout.url(slot)}/metrics", timeout=5)
        answer.raise_for_status()
        return parse_scrape(answer.text)

    def _predictions(self, slot: str) -> dict[str, tuple[str, ...]]:
        """The slot's current prediction log (the candidate's started with it)."""
        path = self.layout.log_dir(slot) / LOG_FILE
        try:
            return predictions_by_request(log_lines(path))
        except LogFileError as exc:
            raise RolloutRefused(str(exc)) from None

    def _record(self, state: st.ServingState) -> st.ServingState:
        st.save(self.layout.state_file, state)
        return state

    def _outcome(self, served: bool, summary: str, verdicts: tuple[Verdict, ...],
                 state: st.ServingState, started: float) -> Outcome:
        log.info("%s", summary)
        return Outcome(served, summary, verdicts, state, round(time.monotonic() - started, 1),
                       dict(self.replayer.statuses))

    @contextmanager
    def _locked(self):
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with open(self.layout.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RolloutRefused("another rollout holds the serving directory; one "
                                     "generation at a time (this run waits for its pool "
                                     "slot and retries)") from None
            yield


def smoke_images(smoke_dir: Path, limit: int = 200) -> list[tuple[bytes, str]]:
    """The release zone's own smoke images (its build context), JPEG and PNG only."""
    kinds = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
    found = [(path.read_bytes(), kinds[path.suffix.lower()])
             for path in sorted((smoke_dir / "images").iterdir())
             if path.suffix.lower() in kinds and path.is_file() and not path.is_symlink()]
    if not found:
        raise RolloutRefused(f"{smoke_dir} holds no smoke images to measure the rollout with")
    return found[:limit]
