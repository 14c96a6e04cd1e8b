"""Which digest serves, from which slot, at which weight, since when: the serving state.

One JSON file in the release zone's directory (RICE_RELEASE_DIR/serving/state.json), written
by the release zone alone and replaced atomically, so a crash leaves the old state or the new
one, never half of each. Two slots, `blue` and `green`, each a container on its own port: the
candidate always starts in the slot the stable one does not hold, so finishing a rollout only
changes which slot is stable, and no container is restarted to change its role.

The file is read back strictly: a value of the wrong kind, an unknown slot or a digest that is
not `sha256:<64 hex>` is refused with what to do, and nothing is started from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from rice_mlops.core.zone_files import TooLarge, read_bounded, write_atomic

VERSION = 1
SLOTS = ("blue", "green")
PHASES = ("idle", "shadow", "canary")
MAX_HISTORY = 10
MAX_STATE_BYTES = 64 * 1024
_REFERENCE = re.compile(r"[a-z0-9.:-]{1,255}/[a-z0-9._/-]{1,255}@sha256:[0-9a-f]{64}")


class StateError(RuntimeError):
    """The serving state file cannot be trusted; the message says what to do."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def other_slot(slot: str) -> str:
    return SLOTS[1 - SLOTS.index(slot)]


@dataclass(frozen=True)
class Deployment:
    """One verified image in one slot: `reference` is `host/name@sha256:...`."""

    slot: str
    reference: str
    model_version: str
    since: str = field(default_factory=now)

    def __post_init__(self) -> None:
        if self.slot not in SLOTS:
            raise StateError(f"slot {self.slot!r} is not one of {SLOTS}")
        if not isinstance(self.reference, str) or not _REFERENCE.fullmatch(self.reference):
            raise StateError(f"{self.reference!r} is not an image reference by digest "
                             "(host/name@sha256:<64 hex>)")
        if not isinstance(self.model_version, str) or not self.model_version.isdigit():
            raise StateError(f"model version {self.model_version!r} is not a number")

    @property
    def digest(self) -> str:
        return self.reference.rsplit("@", 1)[1]

    def describe(self) -> str:
        return f"v{self.model_version} ({self.digest[:19]})"


@dataclass(frozen=True)
class ServingState:
    """`stable` answers the rest of the traffic; `candidate`, during a rollout, answers
    `candidate_percent` of it (and, in shadow, a mirror of all of it). `history` holds the
    stable deployments before this one, newest first: what a rollback on demand returns to."""

    stable: Deployment | None = None
    candidate: Deployment | None = None
    phase: str = "idle"
    candidate_percent: int = 0
    history: tuple[Deployment, ...] = ()
    updated: str = field(default_factory=now)
    note: str = ""

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise StateError(f"phase {self.phase!r} is not one of {PHASES}")
        if type(self.candidate_percent) is not int or not 0 <= self.candidate_percent <= 100:
            raise StateError(f"candidate_percent {self.candidate_percent!r} is not 0-100")
        if (self.candidate is None) != (self.phase == "idle"):
            raise StateError(f"phase {self.phase} with candidate {self.candidate}")
        if self.candidate and self.stable and self.candidate.slot == self.stable.slot:
            raise StateError(f"stable and candidate both in slot {self.stable.slot}")

    def free_slot(self) -> str:
        return other_slot(self.stable.slot) if self.stable else SLOTS[0]

    def with_candidate(self, candidate: Deployment, phase: str, percent: int, note: str
                       ) -> ServingState:
        return replace(self, candidate=candidate, phase=phase, candidate_percent=percent,
                       updated=now(), note=note)

    def rolled_back(self, note: str) -> ServingState:
        return replace(self, candidate=None, phase="idle", candidate_percent=0, updated=now(),
                       note=note)

    def finished(self, note: str) -> ServingState:
        """The candidate becomes stable; the stable it replaces goes on the history."""
        if self.candidate is None:
            raise StateError("no rollout in progress to finish")
        history = ((self.stable, *self.history) if self.stable else self.history)
        return ServingState(stable=self.candidate, history=history[:MAX_HISTORY],
                            note=note)

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **asdict(self)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ServingState:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict) or raw.pop("version", None) != VERSION:
                raise StateError(f"not a version-{VERSION} serving state")
            history = raw.pop("history", [])
            stable, candidate = raw.pop("stable", None), raw.pop("candidate", None)
            if not isinstance(history, list) or len(history) > MAX_HISTORY:
                raise StateError("history is not a short list")
            return cls(stable=_deployment(stable), candidate=_deployment(candidate),
                       history=tuple(_deployment(item) for item in history), **raw)
        except StateError:
            raise
        except (ValueError, TypeError) as exc:
            raise StateError(str(exc)) from None


def _deployment(raw) -> Deployment | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise StateError(f"a deployment is an object, not {type(raw).__name__}")
    return Deployment(**raw)


def load(path: Path) -> ServingState:
    """The recorded state, or an empty one when nothing was ever deployed."""
    try:
        text = read_bounded(path, MAX_STATE_BYTES)
    except TooLarge as exc:
        raise StateError(str(exc)) from None
    if text is None:
        return ServingState()
    try:
        return ServingState.from_json(text.decode())
    except (StateError, UnicodeDecodeError) as exc:
        raise StateError(f"{path} cannot be trusted ({exc}); nothing was started from it. "
                         "Restore it from the run note of the last rollout, or remove it and "
                         "run rice_rollback with the digest to serve") from None


def save(path: Path, state: ServingState) -> None:
    write_atomic(path, state.to_json())


class RolloutRefused(RuntimeError):
    """The candidate was not served: unverifiable, or a stage's verdict; stable serves."""


def choose_rollback(current: ServingState, model_version: str | None) -> Deployment:
    """The earlier deployment a rollback on demand returns to: the one serving `model_version`,
    or the newest before the stable one."""
    if current.stable is None:
        raise RolloutRefused("nothing serves yet: there is nothing to roll back from")
    if not current.history:
        raise RolloutRefused(f"v{current.stable.model_version} is the only deployment on "
                             "record: there is nothing earlier to roll back to")
    if model_version is None:
        return current.history[0]
    for deployment in current.history:
        if deployment.model_version == model_version:
            return deployment
    known = ", ".join(f"v{d.model_version}" for d in current.history)
    raise RolloutRefused(f"v{model_version} never served here (earlier deployments: {known}); "
                         "name one of them")
