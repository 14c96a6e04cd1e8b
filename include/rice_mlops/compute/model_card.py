"""MODEL_CARD.md for every registered version: data, metrics with intervals, per-class recall,
the confusion matrix, the gate's decision against the champion, intended use and limits.

`render` is pure (the numbers come from the run's own evaluation, the validated dataset and the
gate's result); `parse` reads the numbers back, so a test can hold the card to MLflow.
"""

from __future__ import annotations

import re

from rice_mlops.compute.stats import wilson_interval
from rice_mlops.core.vocabulary import MODEL_CARD_FILE

FILE_NAME = MODEL_CARD_FILE

INTENDED_USE = """\
Classifies a photograph of a single rice grain on a dark background into one of the varieties
listed above. It was trained and tested on images like those of the Rice Image Dataset (Koklu
et al. 2021: 250×250 RGB, one grain, centred, black background); the model resizes and scales
raw RGB pixels itself, so clients send the image as it is."""

LIMITS = """\
- Only the varieties above: any other grain, a mixture, a blurred or cropped grain or another
  background still gets one of these labels, often with high probability. There is no
  "unknown" class; callers who need one must threshold the probabilities themselves.
- The test metrics are estimates from a finite test split; the intervals above show how
  uncertain they are. Images from another camera, lighting or dataset were not evaluated.
- A version trained on synthetic data (the embedded default) says nothing about real rice.
- Not for food-safety, grading or trade decisions without an evaluation on the user's own
  images."""


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def render(*, model_name: str, version: str, run_id: str, source_commit: str | None,
           fingerprint: str, counts: dict[str, dict[str, int]], metrics: dict, gate: dict,
           confidence: float) -> str:
    """The card as Markdown. `metrics` is the staged metrics.json (the run's evaluation)."""
    classes = list(metrics["classes"])
    total = sum((counts.get("test") or {}).values()) or int(
        sum(sum(row) for row in metrics["confusion_matrix"]))
    correct = round(metrics["test_accuracy"] * total)
    low, high = wilson_interval(correct, total, confidence)
    level = f"{100 * confidence:.0f} %"
    splits = [s for s in ("train", "val", "test") if s in counts]
    data_rows = "\n".join(f"| {cls} | " + " | ".join(str(counts[s].get(cls, 0)) for s in splits)
                          + " |" for cls in classes)
    data_rows += "\n| **total** | " + " | ".join(str(sum(counts[s].values())) for s in splits) \
        + " |"
    recall_rows = []
    for cls in classes:
        values = metrics["per_class"][cls]
        support = int(values["support"])
        hits = round(values["recall"] * support)
        r_low, r_high = wilson_interval(hits, support, confidence)
        recall_rows.append(f"| {cls} | {values['recall']:.4f} | [{r_low:.4f}, {r_high:.4f}] | "
                           f"{values['precision']:.4f} | {values['f1']:.4f} | {support} |")
    matrix = metrics["confusion_matrix"]
    matrix_rows = "\n".join(f"| **{cls}** | " + " | ".join(str(v) for v in row) + " |"
                            for cls, row in zip(classes, matrix, strict=True))
    verdict = "passed" if gate.get("passed") else "refused"
    val = metrics.get("val_accuracy")
    return f"""# Model card: {model_name} v{version}

| | |
|---|---|
| MLflow run | `{run_id}` |
| source commit | {f"`{source_commit}`" if source_commit else "— (nightly run)"} |
| dataset fingerprint | `{fingerprint}` |
| gate | **{verdict}** ({gate.get("verdict", "—")}) |

## Data

Images per split and class (validated: every file decoded, format checked by content).

| class | {" | ".join(splits)} |
|---|{"---|" * len(splits)}
{data_rows}

## Metrics (test split, {total} images)

| metric | value | {level} interval |
|---|---|---|
| test accuracy | {metrics["test_accuracy"]:.4f} | [{low:.4f}, {high:.4f}] (Wilson) |
| macro F1 | {metrics["test_macro_f1"]:.4f} | — |
| validation accuracy | {"—" if val is None else f"{val:.4f}"} | — |

### Per class

| class | recall | {level} interval | precision | F1 | support |
|---|---|---|---|---|---|
{chr(10).join(recall_rows)}

### Confusion matrix (rows: true class, columns: predicted)

| | {" | ".join(classes)} |
|---|{"---|" * len(classes)}
{matrix_rows}

## Decision against the champion

{gate.get("table") or gate.get("reason", "—")}

## Intended use

{INTENDED_USE}

## Limits

{LIMITS}
"""


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def parse(text: str) -> dict:
    """The numbers of a rendered card: accuracy, per-class recall, confusion matrix, counts."""
    accuracy = float(re.search(r"^\| test accuracy \| ([0-9.]+) \|", text, re.M).group(1))
    per_class = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^\| (\w+) \| ([0-9.]+) \| \[[0-9., ]+\] \| [0-9.]+ \| [0-9.]+ \| \d+ \|$",
        _section(text, "### Per class"), re.M)}
    matrix = [[int(v) for v in m.group(2).split(" | ")] for m in re.finditer(
        r"^\| \*\*(\w+)\*\* \| ([\d | ]+) \|$", _section(text, "### Confusion matrix"), re.M)]
    run_id = re.search(r"^\| MLflow run \| `([0-9a-f]{32})` \|", text, re.M).group(1)
    return {"run_id": run_id, "test_accuracy": accuracy, "recall": per_class,
            "confusion_matrix": matrix}
