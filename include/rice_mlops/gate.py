"""The quality gate: an absolute bar, a per-class recall floor and a paired champion/challenger
comparison that tells a real lead from sampling noise, as a pure function.

With the champion's and the challenger's predictions on the same test images the comparison is
McNemar's exact test on the images where they disagree, with an interval for the accuracy
difference; without them (no champion, or no per-image predictions) it falls back to the
point estimates. Every threshold comes from the deployment's settings or a stricter conf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from rice_mlops.stats import compare_paired, per_class_recall


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    test_accuracy: float  # measured from the per-image predictions when the gate has them
    min_test_accuracy: float
    max_regression: float
    champion_version: str | None = None
    champion_accuracy: float | None = None
    # True: the challenger's lead (or deficit) is significant at `alpha`; False: it may be
    # noise (a pipeline asking for approval reads this); None: nothing to compare with.
    significant: bool | None = None
    verdict: str = "no champion"  # better | worse | not significant | no champion
    min_class_recall: float = 0.0
    alpha: float = 0.05
    confidence: float = 0.95
    comparison: dict | None = None  # stats.PairedComparison.as_dict()
    per_class_recall: dict = field(default_factory=dict)
    champion_per_class_recall: dict = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)
    # What training reported (XCom, MLflow): shown beside the measured figure, never decisive.
    reported_accuracy: float | None = None
    measured: bool = False  # test_accuracy was computed here from labels and predictions

    def as_dict(self) -> dict:
        return {**asdict(self), "table": gate_table(asdict(self))}


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def decide(
    test_accuracy: float,
    *,
    min_test_accuracy: float,
    max_regression: float,
    champion_version: str | None = None,
    champion_accuracy: float | None = None,
    classes: Sequence[str] = (),
    labels: Sequence[int] | None = None,
    predictions: Sequence[int] | None = None,
    champion_predictions: Sequence[int] | None = None,
    min_class_recall: float = 0.0,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> GateResult:
    """Pass only when every rule holds; the reason names each rule that did not.

    With per-image `labels` and `predictions` (the staged TFLite file's answers on the test
    split) the accuracy is measured from them and `test_accuracy` (what training reported) is
    only recorded beside it: a reported number never passes the bar.

    Rules: test accuracy >= `min_test_accuracy`; every class's recall >= `min_class_recall`
    (when per-image predictions are given); not significantly worse than the champion
    (McNemar p < `alpha` with the champion ahead); the estimate not more than
    `max_regression` below the champion's.
    """
    refusals: list[str] = []
    recall, champion_recall, comparison = {}, {}, None
    reported, measured = test_accuracy, labels is not None and predictions is not None
    if measured:
        if len(labels) != len(predictions) or not labels:
            raise ValueError(f"{len(predictions)} predictions for {len(labels)} labelled images")
        test_accuracy = sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels)
    if test_accuracy < min_test_accuracy:
        refusals.append(f"test accuracy {test_accuracy:.4f} is below the minimum "
                        f"{min_test_accuracy:.4f}")
    if labels is not None and predictions is not None:
        recall = per_class_recall(labels, predictions, classes)
        for name, values in recall.items():
            if values["recall"] < min_class_recall:
                refusals.append(f"recall of class {name} is {values['recall']:.4f} "
                                f"({values['correct']}/{values['support']}), below the floor "
                                f"{min_class_recall:.4f}")
    significant, verdict = None, "no champion"
    challenger_estimate = test_accuracy
    if labels is not None and predictions is not None and champion_predictions is not None:
        paired = compare_paired(labels, predictions, champion_predictions, confidence)
        comparison = paired.as_dict()
        champion_recall = per_class_recall(labels, champion_predictions, classes)
        champion_accuracy = paired.champion_accuracy
        challenger_estimate = paired.challenger_accuracy
        significant = paired.p_value < alpha and paired.challenger_only != paired.champion_only
        verdict = ("not significant" if not significant else
                   "better" if paired.challenger_only > paired.champion_only else "worse")
        low, high = paired.interval
        numbers = (f"{paired.challenger_accuracy:.4f} vs {paired.champion_accuracy:.4f} on the "
                   f"same {paired.n} images, {paired.challenger_only} won / "
                   f"{paired.champion_only} lost, McNemar exact p={paired.p_value:.4g}, "
                   f"difference {_points(paired.difference)} points, "
                   f"{100 * confidence:.0f} % CI [{_points(low)}, {_points(high)}]")
        if verdict == "worse":
            refusals.append(f"significantly worse than champion v{champion_version} "
                            f"(p < {alpha}): {numbers}")
    elif champion_accuracy is not None:
        verdict = "not significant"  # point estimates alone cannot tell
        significant = False
        numbers = (f"champion v{champion_version} at {champion_accuracy:.4f}, point estimates "
                   "only (no per-image predictions to test the difference)")
    if champion_accuracy is not None and challenger_estimate < champion_accuracy - max_regression:
        refusals.append(f"test accuracy {challenger_estimate:.4f} is worse than champion "
                        f"v{champion_version} ({champion_accuracy:.4f}) by more than the allowed "
                        f"{max_regression:.4f}")
    if champion_accuracy is None:
        against = "no champion yet"
    elif verdict == "better":
        against = f"significantly better than champion v{champion_version}: {numbers}"
    elif comparison is None:
        against = f"not shown to be significant: {numbers}"
    elif verdict == "not significant":
        against = (f"the difference from champion v{champion_version} is not significant "
                   f"(alpha {alpha}): {numbers}")
    else:
        against = f"champion v{champion_version}: {numbers}"
    passed = not refusals
    reason = ("; ".join(refusals) if refusals else
              f"test accuracy {test_accuracy:.4f} >= {min_test_accuracy:.4f}; {against}")
    if measured and abs(reported - test_accuracy) > 1e-6:
        reason += (f" (measured by the gate on the staged TFLite file's {len(labels)} test "
                   f"predictions; training reported {reported:.4f}, not used)")
    return GateResult(
        passed=passed, reason=reason, test_accuracy=test_accuracy,
        min_test_accuracy=min_test_accuracy, max_regression=max_regression,
        champion_version=champion_version, champion_accuracy=champion_accuracy,
        significant=significant, verdict=verdict, min_class_recall=min_class_recall,
        alpha=alpha, confidence=confidence, comparison=comparison, per_class_recall=recall,
        champion_per_class_recall=champion_recall, refusals=refusals,
        reported_accuracy=reported, measured=measured)


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def gate_table(result: dict) -> str:
    """The gate's numbers as a Markdown table (pull request body, model card, run note)."""
    champion = f"champion v{result['champion_version']}" if result.get("champion_version") \
        else "champion"
    comparison = result.get("comparison") or {}
    accuracy = comparison.get("challenger_accuracy", result["test_accuracy"])
    rows = [f"| accuracy | {_pct(accuracy)} | {_pct(result.get('champion_accuracy'))} | "
            f"≥ {_pct(result['min_test_accuracy'])} |"]
    theirs = result.get("champion_per_class_recall") or {}
    for name, values in (result.get("per_class_recall") or {}).items():
        other = (theirs.get(name) or {}).get("recall")
        mark = " ✗" if values["recall"] < result["min_class_recall"] else ""
        rows.append(f"| recall {name} | {_pct(values['recall'])}{mark} | {_pct(other)} | "
                    f"≥ {_pct(result['min_class_recall'])} |")
    lines = ["| | this model | " + champion + " | rule |", "|---|---|---|---|", *rows]
    if comparison:
        low, high = comparison["interval"]
        lines += [
            f"| difference | {_points(comparison['difference'])} points | "
            f"{100 * comparison['confidence']:.0f} % CI [{_points(low)}, {_points(high)}] | "
            f"≥ {_points(-result['max_regression'])} points |",
            f"| disagreements | {comparison['challenger_only']} won | "
            f"{comparison['champion_only']} lost | McNemar exact p = "
            f"{comparison['p_value']:.4g} (alpha {result['alpha']}) |"]
    verdict = "PASSED" if result["passed"] else "REFUSED"
    significance = {True: "significant", False: "not significant", None: "no comparison"}
    lines.append(f"\n**Gate {verdict}** ({result['verdict']}; "
                 f"{significance[result.get('significant')]}): {result['reason']}")
    return "\n".join(lines)
