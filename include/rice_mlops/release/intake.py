"""What the release zone (the Docker worker) takes in and measures before it builds an image.

The release zone holds the engine socket, the registry push credentials and the signing key, so
it loads no Python model: no MLflow pyfunc, no pickle, no MLmodel `loader_module`, nothing from
a model directory but two data files. The model enters as bytes, `model.tflite` and
`labels.json`, copied into a directory the release zone owns and checked there (after the copy,
so nobody can swap them between the check and the build) against the sha256 the train task
recorded at training time. Its expectations come from the LiteRT interpreter on those bytes,
and it measures their test accuracy and per-class recall on the test split itself: below the
bar or a class floor nothing is built, whatever XCom or MLflow report.

Imports nothing heavy at module level; MLflow is never imported here.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rice_mlops.core.staged_artifacts import MODEL_BYTES, ReleaseInputError

# The run artifacts whose digests training records (run_seal.MANIFESTED_ARTIFACTS) and the
# file names they take in a build context.
DRIFT_REFERENCE = "drift-reference.json"  # in the build context's smoke/ (never in the image)
SMOKE_MAX_PER_CLASS = 200  # the CI test split is 200 real images per class: all of it
LATENCY_PER_CLASS = 2  # images per class the latency probe times (budgets.PROBE)
MAX_LABELS_BYTES = 64 * 1024
_CLASS = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")




class BelowBar(RuntimeError):
    """The release zone measured the shipped bytes below the bar or a class floor."""




def take_model_bytes(source: Path, digests: Mapping[str, str], target: Path) -> list[str]:
    """Copy model.tflite and labels.json from `source` into `target` (a new directory the
    release zone owns) and check the copies against `digests`; returns the class names.

    Nothing else of `source` is read: an MLmodel, a `code/` directory or a pickle beside the
    files is never opened. Raises ReleaseInputError on a missing file, a link, a digest that
    differs or labels that are not a short list of class names.
    """
    from rice_mlops.core.fingerprint import file_sha256

    target.mkdir(parents=True, exist_ok=False)
    for artifact, name in MODEL_BYTES.items():
        origin = source / name
        if origin.is_symlink() or not origin.is_file():
            raise ReleaseInputError(f"{origin} is not a regular file")
        copy = target / name
        shutil.copyfile(origin, copy)
        actual = file_sha256(copy)
        if actual != digests[artifact]:
            raise ReleaseInputError(
                f"{name} has sha256 {actual}, not the {digests[artifact]} recorded at training "
                f"for {artifact}: the model bytes changed after training; not built")
    return read_classes(target / "labels.json")


def read_classes(labels: Path) -> list[str]:
    if labels.stat().st_size > MAX_LABELS_BYTES:
        raise ReleaseInputError(f"{labels} is larger than {MAX_LABELS_BYTES} bytes")
    try:
        classes = json.loads(labels.read_text())["classes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ReleaseInputError(f"{labels} is not {{\"classes\": [...]}}: {exc}") from None
    if (not isinstance(classes, list) or not 2 <= len(classes) <= 100
            or not all(isinstance(c, str) and _CLASS.fullmatch(c) for c in classes)
            or len(set(classes)) != len(classes)):
        raise ReleaseInputError(f"{labels} does not hold 2-100 distinct class names")
    return classes


def smoke_set(data_dir: Path, classes: Sequence[str],
              max_per_class: int = SMOKE_MAX_PER_CLASS) -> list[tuple[Path, str]]:
    """(image, true class) for the first `max_per_class` test images of each class, in a stable
    order: the set the release zone and the smoke test measure the shipped bytes on."""
    from rice_mlops.core.dataset_layout import discover

    dataset = discover(data_dir)
    if list(dataset.classes) != list(classes):
        raise ReleaseInputError(f"the dataset's classes {dataset.classes} are not the model's "
                                f"{list(classes)}")
    chosen = [(path, cls) for cls in dataset.classes
              for path in sorted(dataset.files["test"][cls])[:max_per_class]]
    # The images are copied into the release zone's smoke set: a link could name any file of
    # this worker (the signing key) instead of an image.
    links = [str(path) for path, _ in chosen if path.is_symlink() or not path.is_file()]
    if links:
        raise ReleaseInputError(f"test images that are links or not regular files: {links[:5]}")
    if not chosen:
        raise ReleaseInputError(f"{data_dir} has no test images to measure the model on")
    return chosen


def litert_probabilities(tflite: Path, images: Sequence[Path]) -> list[list[float]]:
    """The TFLite file's probabilities for each raw image, through the LiteRT interpreter
    (resizing and scaling are inside the model): data in, numbers out, no model code."""
    return litert_outputs(tflite, images)[0]


def litert_outputs(tflite: Path, images: Sequence[Path]) -> tuple[list[list[float]], list[dict]]:
    """`litert_probabilities`, and each image's input statistics as the serving server logs
    them (for the drift reference the release zone records from these same bytes)."""
    from rice_mlops.serving.inference import TooManyPixels, file_outputs

    try:
        probabilities, statistics = file_outputs(tflite, images)
    except TooManyPixels as exc:
        raise ReleaseInputError(str(exc)) from None
    return [[float(p) for p in row] for row in probabilities], statistics


@dataclass(frozen=True)
class Measurement:
    """Accuracy and per-class recall of the shipped bytes on the smoke set (the test split)."""

    accuracy: float
    correct: int
    images: int
    recall: dict[str, float]
    min_test_accuracy: float
    min_class_recall: float
    refusals: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.refusals

    def as_dict(self) -> dict:
        return {**asdict(self), "refusals": list(self.refusals), "passed": self.passed}


def measure(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str], *,
            min_test_accuracy: float, min_class_recall: float) -> Measurement:
    """Accuracy and recall per class, with the rules they break (the same rules as
    `serving.smoke`, which re-measures inside the built image)."""
    if len(true) != len(predicted) or not true:
        raise ReleaseInputError(f"{len(predicted)} predictions for {len(true)} images")
    correct = sum(t == p for t, p in zip(true, predicted, strict=True))
    recall = {}
    for cls in classes:
        support = [p for t, p in zip(true, predicted, strict=True) if t == cls]
        recall[cls] = sum(p == cls for p in support) / len(support) if support else 0.0
    accuracy = correct / len(true)
    refusals = []
    if accuracy < min_test_accuracy:
        refusals.append(f"test accuracy {accuracy:.4f} ({correct}/{len(true)}) is below the "
                        f"bar {min_test_accuracy:.4f}")
    refusals += [f"recall of class {cls} is {value:.4f}, below the floor "
                 f"{min_class_recall:.4f}" for cls, value in recall.items()
                 if value < min_class_recall]
    return Measurement(accuracy=accuracy, correct=correct, images=len(true), recall=recall,
                       min_test_accuracy=min_test_accuracy, min_class_recall=min_class_recall,
                       refusals=tuple(refusals))


def card_section(measurement: Measurement, where: str) -> str:
    """The model card's paragraph on what the release zone measured."""
    rows = "\n".join(f"| {cls} | {value:.4f} | ≥ {measurement.min_class_recall:.4f} |"
                     for cls, value in measurement.recall.items())
    return (f"\n\n## Measured by the release zone\n\n"
            f"{where}: test accuracy **{measurement.accuracy:.4f}** ({measurement.correct}/"
            f"{measurement.images} test images; bar ≥ {measurement.min_test_accuracy:.4f}). "
            "The smoke test measures the same figures again inside the built image before it "
            "is pushed, and refuses below the bar or a class floor.\n\n"
            f"| class | recall | floor |\n|---|---|---|\n{rows}\n")
