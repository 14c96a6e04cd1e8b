"""The champion the challenger is compared with, as the pipeline itself recorded it.

MLflow is not trusted to name the champion or to run code: anyone who reaches it can move the
`champion` alias or register a pickled pyfunc model. The trusted record is the extra of the
asset event that `promote` wrote in Airflow's own database (version, run id, the TFLite file's
sha256, test accuracy, dataset fingerprint). When the dataset changed, the champion is
re-evaluated from its TFLite file, only after that file's sha256 matches the record, with the
LiteRT interpreter: data in, probabilities out, no model code loaded.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rice_mlops.core.fingerprint import file_sha256
from rice_mlops.core.run_policy import RUN_ID

log = logging.getLogger(__name__)

_SHA256 = "0123456789abcdef"


class ChampionMismatch(RuntimeError):
    """MLflow's copy of the champion is not what the pipeline promoted."""


@dataclass(frozen=True)
class ChampionRecord:
    version: str
    run_id: str
    tflite_sha256: str
    test_accuracy: float
    dataset_fingerprint: str
    classes: tuple[str, ...]
    code_digest: str | None = None  # absent from records written before it was recorded

    @classmethod
    def from_extra(cls, extra: Mapping) -> ChampionRecord | None:
        """The record in an asset event's extra, or None when it lacks what a comparison needs
        (events written before records carried the TFLite digest)."""
        try:
            record = cls(version=str(extra["model_version"]), run_id=str(extra["mlflow_run_id"]),
                         tflite_sha256=str(extra["tflite_sha256"]),
                         test_accuracy=float(extra["test_accuracy"]),
                         dataset_fingerprint=str(extra["dataset_fingerprint"]),
                         classes=tuple(extra["classes"]),
                         code_digest=extra.get("code_digest"))
        except (KeyError, TypeError, ValueError):
            return None
        digest = record.tflite_sha256
        if (not RUN_ID.fullmatch(record.run_id) or len(digest) != 64
                or set(digest) - set(_SHA256) or not record.version.isdigit()):
            return None
        return record

    def as_dict(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}


def latest_record(events: Iterable, dag_id: str, task_id: str = "promote"
                  ) -> ChampionRecord | None:
    """The newest complete record among asset events written by our own `promote` task."""
    for event in reversed(list(events)):
        if getattr(event, "source_dag_id", None) != dag_id:
            continue
        if getattr(event, "source_task_id", None) != task_id:
            continue
        if (record := ChampionRecord.from_extra(getattr(event, "extra", None) or {})):
            return record
    return None


def tflite_predictions(model_path: Path, paths: list[Path]) -> list[int]:
    """The class index a TFLite file predicts for each raw image."""
    from rice_mlops.serving.inference import file_outputs

    return [int(np.argmax(row)) for row in file_outputs(model_path, paths)[0]]


def fetch_tflite(record: ChampionRecord, target_dir: Path) -> Path:
    """The champion's TFLite file from MLflow, checked against the recorded sha256."""
    import mlflow

    from rice_mlops.core.vocabulary import TFLITE_ARTIFACT

    local = Path(mlflow.artifacts.download_artifacts(
        run_id=record.run_id, artifact_path=TFLITE_ARTIFACT, dst_path=str(target_dir)))
    actual = file_sha256(local)
    if actual != record.tflite_sha256:
        raise ChampionMismatch(
            f"champion v{record.version}'s TFLite file in MLflow (run {record.run_id}) has "
            f"sha256 {actual}, not the {record.tflite_sha256} recorded when it was promoted: "
            "MLflow was changed behind the pipeline's back; investigate before shipping")
    return local


def champion_predictions(record: ChampionRecord, fingerprint: str, classes: list[str],
                         test_paths: list[Path]) -> tuple[list[int] | None, str]:
    """The champion's predictions on the challenger's test images, and how they were obtained.

    Always re-scored from its verified TFLite file: a paired test needs per-image answers on
    these very images, which no recorded accuracy can give.
    """
    if list(record.classes) != list(classes):
        return None, (f"champion classes {list(record.classes)} differ from {classes}: "
                      "no comparison possible")
    with tempfile.TemporaryDirectory(prefix="rice-champion-") as scratch:
        model = fetch_tflite(record, Path(scratch))
        predicted = tflite_predictions(model, test_paths)
    data = ("same dataset" if record.dataset_fingerprint == fingerprint
            else "dataset changed since its promotion")
    return predicted, (f"champion v{record.version} re-scored from its verified TFLite file on "
                       f"the challenger's {len(test_paths)} test images ({data})")
