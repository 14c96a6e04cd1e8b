"""What a run came to, in one line: for the run note, the commit status and the e-mail.

A pure function of the hand-offs the `report` task receives (the admission and freshness
decisions, the gate's result, the pushed image, the champion record) and the states of the
run's tasks, so every outcome is tested without Airflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rice_mlops.core.handoffs import Admission, Approval, Freshness, Gate, Promoted, Served

STATUS_CONTEXT = "rice-mlops/pipeline"
_DESCRIPTION_MAX = 140  # GitHub refuses longer status descriptions


@dataclass(frozen=True)
class Outcome:
    kind: str  # shipped | not_shipped | superseded | not_admitted | unchanged | crashed
    note: str  # one line for the Airflow grid
    state: str  # commit status: success | failure | error
    notify: bool  # worth an e-mail: a crash or a release refused

    @property
    def description(self) -> str:
        text = self.note
        return text if len(text) <= _DESCRIPTION_MAX else text[:_DESCRIPTION_MAX - 1] + "…"

    def as_dict(self) -> dict:
        return {**asdict(self), "description": self.description}


RELEASE_MEASURES = "prepare_image_context"  # the task where the release zone measures
ROLLOUT = "roll_out"  # the task that serves it, or rolls it back
REFUSING_TASKS = (RELEASE_MEASURES, ROLLOUT)  # tasks that fail on a decision, not a crash
REFUSAL_KEY = "release_refusal"  # their XCom key for why they refused
# Outcomes in which something went wrong rather than a decision being taken: a task failed,
# a result was not its task's, a run was started by an event nobody trusted.
FAILING_KINDS = frozenset({"crashed", "not_admitted"})


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _shipped(gate: Gate, promoted: Promoted) -> str:
    accuracy = promoted.test_accuracy
    line = f"shipped v{promoted.model_version}: test accuracy {_pct(accuracy)}"
    champion = gate.champion_accuracy
    if champion is not None and accuracy is not None:
        line += f" ({100 * (accuracy - champion):+.2f} points vs v{gate.champion_version})"
    return line


def fails_the_run(outcome: Outcome, failed_tasks: list[str]) -> bool:
    """Whether the run must end `failed`, red in the grid and seen by a failed-runs filter,
    `on_failure_callback` and any alert on run state: a task failed for good (the release
    zone's refusals too: a rollback, its own measurement below the bar, an image that did not
    verify), or the outcome is a failure. A run that decided not to ship (superseded,
    unchanged, gate below the bar, release rejected or unanswered) ends `success`."""
    return bool(failed_tasks) or outcome.kind in FAILING_KINDS


def decide_outcome(*, admission: Admission | None, freshness: Freshness | None,
                   gate: Gate | None, approval: Approval | None = None,
                   promoted: Promoted | None, failed_tasks: list[str],
                   release_refusal: str | None = None,
                   served: Served | None = None) -> Outcome:
    """The run's outcome; a crash outranks everything, then the earliest decision.

    `release_refusal`: why the release zone refused (its own measurement of the model's bytes
    below the bar, an image that did not verify, a rollout rolled back), when the refusing task
    is the only failure: a decision, not a crash."""
    if release_refusal and len(failed_tasks) == 1 and failed_tasks[0] in REFUSING_TASKS:
        return Outcome("not_shipped", f"NOT SHIPPED: {release_refusal}", "failure", True)
    if failed_tasks:
        return Outcome("crashed", f"FAILED: {', '.join(sorted(failed_tasks))} failed; "
                       "nothing shipped (see the task logs)", "error", True)
    if admission is not None and not admission.proceed and admission.refused:
        return Outcome("not_admitted", f"NOT ADMITTED: {admission.refused}"[:1000], "error",
                       True)
    if admission is not None and not admission.proceed:
        return Outcome("superseded", f"superseded by {(admission.superseded_by or '?')[:12]}: "
                       "not trained (the newer push is built instead)", "error", False)
    if freshness is not None and not freshness.train:
        return Outcome("unchanged", f"unchanged: {freshness.reason}", "success", False)
    if gate is not None and not gate.passed:
        return Outcome("not_shipped", f"NOT SHIPPED: {gate.reason or 'gate failed'}",
                       "failure", True)
    if approval is not None and approval.required and not approval.approved:
        who = approval.by
        why = f"release rejected by {who}" if who else "nobody approved the release in time"
        return Outcome("not_shipped", f"NOT SHIPPED: {why}", "failure", True)
    if gate is not None and promoted and promoted.image_digest:
        serving = f"; {served.summary}" if served is not None and served.served else ""
        return Outcome("shipped", _shipped(gate, promoted) + serving, "success", False)
    if gate is not None and promoted:
        return Outcome("shipped", _shipped(gate, promoted) + " (no image: no registry)",
                       "success", False)
    return Outcome("not_shipped", "NOT SHIPPED: the gate passed but no image was pushed "
                   "(see the image tasks)", "failure", True)


@dataclass(frozen=True)
class Drift:
    """The drift a run answers: the monitoring's summary, and the images its labelling queue
    held then (None when the serving samples none)."""

    summary: str
    labelling_waiting: int | None = None
    labelling_queue: str | None = None  # where the images wait (the release zone's path)


def answering_drift(outcome: Outcome, drift: Drift | None) -> Outcome:
    """A run a `rice_drift` event started names the drift it answers; one with nothing new to
    train on says so, and what would change that (retraining on the same data fixes nothing)."""
    if drift is None:
        return outcome
    if outcome.kind == "unchanged":
        waiting = drift.labelling_waiting
        where = f" ({drift.labelling_queue})" if drift.labelling_queue else ""
        queue = (f"{waiting:,} image{'' if waiting == 1 else 's'} waiting in the labelling "
                 f"queue{where}; " if waiting is not None else "")
        return replace(outcome, note=f"{drift.summary}; no new labelled data: {queue}not "
                                     "retrained (add labelled images under the data root: "
                                     "the next run, push, nightly or drift, retrains on them)")
    return replace(outcome, note=f"{outcome.note} (answers {drift.summary})")


def latest_drift(events) -> Drift | None:
    """The newest `rice_drift` event among a run's triggering events (its extra is the
    monitoring's own record; only a string and a count are taken from it, for the note)."""
    found = []
    for event in events or ():
        extra = getattr(event, "extra", None)
        if isinstance(extra, dict) and isinstance(extra.get("summary"), str):
            found.append((str(getattr(event, "timestamp", "")), extra))
    if not found:
        return None
    extra = max(found, key=lambda item: item[0])[1]
    version = extra.get("model_version")
    summary = (f"v{version}: {extra['summary']}" if version else extra["summary"])[:300]
    waiting = extra.get("labelling_waiting")
    valid = isinstance(waiting, int) and not isinstance(waiting, bool) and waiting >= 0
    queue = extra.get("labelling_queue")
    # A path for people to read in the note: printable, bounded, or left out.
    shown = queue if isinstance(queue, str) and queue.isprintable() and len(queue) <= 200 \
        else None
    return Drift(summary, waiting if valid else None, shown if valid else None)
