"""Classification metrics as one JSON-able document, and the plots that go with it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def evaluate(y_true: Sequence[int], probabilities: np.ndarray, classes: Sequence[str]) -> dict:
    """Overall and per-class metrics; rows of the confusion matrix are the true class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(probabilities).argmax(axis=1)
    matrix = confusion_matrix(y_true, y_pred, len(classes))
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive),
                          where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive),
                   where=denominator > 0)
    return {
        "accuracy": float(true_positive.sum() / max(1, len(y_true))),
        "macro_f1": float(f1.mean()),
        "count": int(len(y_true)),
        "per_class": {
            cls: {"precision": float(precision[i]), "recall": float(recall[i]),
                  "f1": float(f1[i]), "support": int(actual[i])}
            for i, cls in enumerate(classes)
        },
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }


def flat_metrics(evaluation: dict, prefix: str = "test") -> dict[str, float]:
    """MLflow metric names for an evaluation document."""
    metrics = {
        f"{prefix}_accuracy": evaluation["accuracy"],
        f"{prefix}_macro_f1": evaluation["macro_f1"],
    }
    for cls, values in evaluation["per_class"].items():
        metrics[f"{prefix}_precision_{cls}"] = values["precision"]
        metrics[f"{prefix}_recall_{cls}"] = values["recall"]
    return metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(evaluation: dict, path: Path) -> Path:
    plt = _pyplot()
    matrix = np.asarray(evaluation["confusion_matrix"])
    classes = evaluation["classes"]
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test accuracy {evaluation['accuracy']:.4f}")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > threshold else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_training_curves(history: dict[str, list[float]], path: Path) -> Path:
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        for name in (key, f"val_{key}"):
            if name in history:
                ax.plot(range(1, len(history[name]) + 1), history[name], label=name)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
