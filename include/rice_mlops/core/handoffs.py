"""What the DAG's tasks hand each other: one small frozen dataclass per stage result.

Airflow's XCom serialises them as they are (`airflow.sdk.serde`: a dataclass is stored as
`{"__classname__": "rice_mlops.core.handoffs.Trained", "__version__": 1, "__data__": {...}}`
and rebuilt with `cls(**data)`), so the rules of that round trip hold here:

- Fields are flat: primitives, tuples, and dicts of them. A dataclass nested inside another
  would come back as a plain dict (serde stores `dataclasses.asdict`), so none is.
- `__version__` is the layout's version: serde refuses a stored value newer than the class.
  Raise it when a field is renamed or removed; a new field needs a default.
- Deserialising names a class to import, so `[core] allowed_deserialization_classes` admits
  this module's classes and nothing else of ours (scripts/airflow-stack, docker-compose.yaml,
  tests/helpers/pipeline.py). Never give a class here a `serialize`/`deserialize` method or a
  constructor with side effects: it runs on whatever a stored XCom says.

XCom values stay untrusted input (a user may patch them): a field is data, never a path or a
command by itself. Names derived from a result (its staging directories, its image plan) are
methods here, written once, and they check the run id before it names anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rice_mlops.core.run_policy import PolicyError, checked_digest, checked_run_id
from rice_mlops.core.staged_artifacts import ARTIFACT_DIR, recorded_digests
from rice_mlops.core.vocabulary import MODEL_CARD_FILE

if TYPE_CHECKING:
    from rice_mlops.core.settings import PipelineSettings

EVIDENCE_DIR = "evidence"  # beside model_artifact/ in a run's staging directory

# `[core] allowed_deserialization_classes` wherever Airflow runs: Airflow's own default
# (`airflow.*`) and this module's classes, nothing else of ours. Turning a stored XCom back into
# an object imports the class it names and calls it, so the list is a list of code paths: a
# wider pattern (`rice_mlops.*`) would let a patched XCom construct any class of the package.
ALLOWED_DESERIALIZATION_CLASSES = "airflow.* rice_mlops.core.handoffs.*"


class _HandOff:
    """What every hand-off shares: its layout version and a JSON-ready copy of itself."""

    __version__ = 1

    def __post_init__(self) -> None:
        # A tuple field read back from JSON (a REST client, an XCom patched by hand) is a list.
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            if str(item.type).startswith("tuple") and isinstance(value, list):
                object.__setattr__(self, item.name, tuple(value))

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (tuples become lists), for MLflow and renderers."""
        return _plain(asdict(self))  # type: ignore[call-overload]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class Admission(_HandOff):
    """`admit`: whether the run goes on; when not, the newer push that superseded it, or why
    it was refused (a drift trigger the release zone's monitoring did not raise)."""

    proceed: bool
    superseded_by: str | None = None
    refused: str | None = None


@dataclass(frozen=True)
class Dataset(_HandOff):
    """`validate_data`: the checked dataset's directory, fingerprint, classes and counts."""

    data_dir: str
    fingerprint: str
    classes: tuple[str, ...]
    counts: dict[str, Any]


@dataclass(frozen=True)
class Freshness(_HandOff):
    """`check_changed`: whether training could change anything, and why; and what it judged
    by, so `train` on another machine can refuse to train something else."""

    train: bool
    code_digest: str
    reason: str
    # The training parameters and the digest of the training modules with them, without the
    # installed packages (a GPU worker's TensorFlow build differs legitimately). Empty in an
    # XCom written before they were recorded.
    model_params: dict[str, Any] = field(default_factory=dict)
    source_digest: str = ""


@dataclass(frozen=True)
class Trained(_HandOff):
    """`train`: the MLflow run and what it recorded; the model bytes stay in MLflow."""

    run_id: str
    model_uri: str
    model_id: str | None
    experiment_id: str
    tracking_uri: str
    image_size: int
    classes: tuple[str, ...]
    metrics: dict[str, float]
    dataset_fingerprint: str
    epochs_run: int
    code_digest: str | None = None
    artifact_sha256: dict[str, str] | None = None  # None: recorded by no train task

    @classmethod
    def from_result(cls, result: dict) -> Trained:
        """The hand-off of `training.train_once`'s result (which holds more than this)."""
        return cls(**{f.name: result[f.name] for f in fields(cls) if f.name in result})

    @property
    def run_url(self) -> str:
        """The MLflow run's page."""
        return f"{self.tracking_uri}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checked once, here: the run id names directories, tags and images downstream, and
        # serde rebuilds a stored (possibly patched) XCom through this constructor.
        checked_run_id(self.run_id)

    def run_dir(self, settings: PipelineSettings) -> Path:
        """This run's directory under RICE_STAGING_DIR."""
        return settings.staging_root / self.run_id

    def staged_dir(self, settings: PipelineSettings) -> Path:
        """Where `fetch_artifacts` stages the run's files (not checked against the manifest)."""
        return self.run_dir(settings) / ARTIFACT_DIR

    def evidence_dir(self, settings: PipelineSettings) -> Path:
        """Where the gate writes the run's model card, beside its staged artifacts."""
        return self.run_dir(settings) / EVIDENCE_DIR

    def model_card(self, settings: PipelineSettings) -> Path:
        return self.evidence_dir(settings) / MODEL_CARD_FILE

    def digests(self) -> dict[str, str]:
        """The sha256 of each model file as training recorded it (ReleaseInputError if not)."""
        return recorded_digests({"artifact_sha256": self.artifact_sha256})


@dataclass(frozen=True)
class Staged(_HandOff):
    """`fetch_artifacts`: how many files were staged, and the TFLite file's digest."""

    staging_dir: str
    files: int
    tflite_sha256: str


@dataclass(frozen=True)
class Gate(_HandOff):
    """`quality_gate`: the decision on the registered version, with the figures behind it
    (`gate.GateResult`'s fields, flat) and what the gate task added."""

    passed: bool
    reason: str
    version: str
    test_accuracy: float
    min_test_accuracy: float = 0.0
    max_regression: float = 0.0
    champion_version: str | None = None
    champion_accuracy: float | None = None
    significant: bool | None = None
    verdict: str = "no champion"
    min_class_recall: float = 0.0
    alpha: float = 0.05
    confidence: float = 0.95
    comparison: dict | None = None
    per_class_recall: dict = field(default_factory=dict)
    champion_per_class_recall: dict = field(default_factory=dict)
    refusals: tuple[str, ...] = ()
    reported_accuracy: float | None = None
    measured: bool = False
    table: str = ""
    champion_comparison: str = ""
    champion_record: dict | None = None
    model_card_sha256: str | None = None

    @classmethod
    def from_result(cls, result: Any, **extra: Any) -> Gate:
        """The hand-off of a `gate.GateResult` (its fields this type knows) plus `extra`."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in result.as_dict().items() if key in known}
        values["refusals"] = tuple(values.get("refusals", ()))
        return cls(**{**values, **extra})


@dataclass(frozen=True)
class BuildContext(_HandOff):
    """`prepare_image_context`: the hermetic build context and the names it will be pushed as
    (what the Docker tasks run is derived again from the run id, never read from here)."""

    run_id: str
    context: str
    image: str
    latest: str
    repository: str
    local: str
    registry: str | None

    def __post_init__(self) -> None:
        super().__post_init__()
        checked_run_id(self.run_id)



@dataclass(frozen=True)
class Image(_HandOff):
    """`record_image` / `attest_image`: the pushed image by digest, and its attachments."""

    image: str
    latest: str
    digest_ref: str
    digest: str
    attachments: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checked once, here: later tasks pull, verify and serve by this digest.
        checked_digest(self.digest)
        if not self.digest_ref.endswith(f"@{self.digest}"):
            raise PolicyError(f"{self.digest_ref!r} does not name the image by {self.digest}")


@dataclass(frozen=True)
class Approval(_HandOff):
    """`approve_release`: whether a person was asked, the answer, and who gave it."""

    required: bool
    approved: bool
    by: str | None = None


@dataclass(frozen=True)
class Promoted(_HandOff):
    """`promote`: the champion record, also the extra of the model asset's event (the next
    gate reads it back through `champion.ChampionRecord.from_extra`)."""

    mlflow_run_id: str
    model_version: str
    test_accuracy: float
    dataset_fingerprint: str
    classes: tuple[str, ...]
    tflite_sha256: str
    code_digest: str | None = None
    image: str | None = None
    image_digest: str | None = None


@dataclass(frozen=True)
class Served(_HandOff):
    """`roll_out`: what serves after this run's rollout, and how it got there."""

    served: bool
    summary: str  # "serving v7 at 100 %", for the run note
    model_version: str
    reference: str  # host/name@sha256:... now at 100 %
    seconds: float
    verdicts: tuple[str, ...] = ()  # each stage's reason, in order
    client_errors: int = 0  # non-2xx answers the replayed traffic got


def unwrapped(stored: Any) -> Any:
    """An XCom value as Airflow stores it (and its REST API answers it without `deserialize`),
    with serde's envelopes `{"__classname__", "__version__", "__data__"}` replaced by their
    data: a hand-off becomes the dict of its fields, a tuple a list. Nothing is imported or
    constructed, so a REST client reads any task's XCom this way, whatever class it names."""
    if isinstance(stored, dict):
        if {"__classname__", "__version__", "__data__"} <= stored.keys():
            return unwrapped(stored["__data__"])
        return {key: unwrapped(item) for key, item in stored.items()}
    if isinstance(stored, list):
        return [unwrapped(item) for item in stored]
    return stored


HANDOFFS = (Admission, Dataset, Freshness, Trained, Staged, Gate, BuildContext, Image,
            Approval, Promoted, Served)
