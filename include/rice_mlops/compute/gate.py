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

from rice_mlops.compute.stats import PairedComparison, compare_paired, per_class_recall


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


@dataclass(frozen=True)
class Rules:
    """The gate's thresholds: the deployment's settings, or a stricter conf."""

    min_test_accuracy: float
    max_regression: float
    min_class_recall: float = 0.0
    alpha: float = 0.05  # McNemar's significance level
    confidence: float = 0.95  # of the interval for the accuracy difference


@dataclass(frozen=True)
class Decision:
    """What the gate found, before any of it is put into words."""

    test_accuracy: float  # measured from the predictions when given, else as reported
    reported_accuracy: float
    measured: bool
    images: int  # labelled test images the accuracy was measured on (0: not measured)
    below_bar: bool
    weak_classes: tuple[str, ...]  # below the per-class recall floor, in class order
    recall: dict
    champion_recall: dict
    champion_version: str | None
    champion_accuracy: float | None
    challenger_estimate: float  # the accuracy held against the champion's
    paired: PairedComparison | None
    significant: bool | None
    verdict: str  # better | worse | not significant | no champion
    regressed: bool  # more than max_regression below the champion

    @property
    def passed(self) -> bool:
        return not (self.below_bar or self.weak_classes or self.verdict == "worse"
                    or self.regressed)


def judge(test_accuracy: float, rules: Rules, *, champion_version: str | None = None,
          champion_accuracy: float | None = None, classes: Sequence[str] = (),
          labels: Sequence[int] | None = None, predictions: Sequence[int] | None = None,
          champion_predictions: Sequence[int] | None = None) -> Decision:
    """The decision alone: every rule checked, nothing worded (see `decide`)."""
    reported, measured = test_accuracy, labels is not None and predictions is not None
    recall, champion_recall, paired = {}, {}, None
    if measured:
        if len(labels) != len(predictions) or not labels:
            raise ValueError(f"{len(predictions)} predictions for {len(labels)} labelled images")
        test_accuracy = sum(p == y for p, y in zip(predictions, labels, strict=True)) / len(labels)
        recall = per_class_recall(labels, predictions, classes)
    significant, verdict, challenger_estimate = None, "no champion", test_accuracy
    if measured and champion_predictions is not None:
        paired = compare_paired(labels, predictions, champion_predictions, rules.confidence)
        champion_recall = per_class_recall(labels, champion_predictions, classes)
        champion_accuracy = paired.champion_accuracy
        challenger_estimate = paired.challenger_accuracy
        significant = (paired.p_value < rules.alpha
                       and paired.challenger_only != paired.champion_only)
        verdict = ("not significant" if not significant else
                   "better" if paired.challenger_only > paired.champion_only else "worse")
    elif champion_accuracy is not None:
        verdict, significant = "not significant", False  # point estimates alone cannot tell
    return Decision(
        test_accuracy=test_accuracy, reported_accuracy=reported, measured=measured,
        images=len(labels) if measured else 0,
        below_bar=test_accuracy < rules.min_test_accuracy,
        weak_classes=tuple(name for name, values in recall.items()
                           if values["recall"] < rules.min_class_recall),
        recall=recall, champion_recall=champion_recall, champion_version=champion_version,
        champion_accuracy=champion_accuracy, challenger_estimate=challenger_estimate,
        paired=paired, significant=significant, verdict=verdict,
        regressed=(champion_accuracy is not None
                   and challenger_estimate < champion_accuracy - rules.max_regression))


def _comparison_words(decision: Decision, rules: Rules) -> str:
    """The numbers behind the comparison with the champion, in one clause."""
    paired, version = decision.paired, decision.champion_version
    if paired is None:
        return (f"champion v{version} at {decision.champion_accuracy:.4f}, point estimates "
                "only (no per-image predictions to test the difference)")
    low, high = paired.interval
    return (f"{paired.challenger_accuracy:.4f} vs {paired.champion_accuracy:.4f} on the "
            f"same {paired.n} images, {paired.challenger_only} won / "
            f"{paired.champion_only} lost, McNemar exact p={paired.p_value:.4g}, "
            f"difference {_points(paired.difference)} points, "
            f"{100 * rules.confidence:.0f} % CI [{_points(low)}, {_points(high)}]")


def refusals(decision: Decision, rules: Rules) -> list[str]:
    """One sentence per rule the decision broke, in the order the rules are listed."""
    found, version = [], decision.champion_version
    if decision.below_bar:
        found.append(f"test accuracy {decision.test_accuracy:.4f} is below the minimum "
                     f"{rules.min_test_accuracy:.4f}")
    for name in decision.weak_classes:
        values = decision.recall[name]
        found.append(f"recall of class {name} is {values['recall']:.4f} "
                     f"({values['correct']}/{values['support']}), below the floor "
                     f"{rules.min_class_recall:.4f}")
    if decision.verdict == "worse":
        found.append(f"significantly worse than champion v{version} (p < {rules.alpha}): "
                     f"{_comparison_words(decision, rules)}")
    if decision.regressed:
        found.append(f"test accuracy {decision.challenger_estimate:.4f} is worse than champion "
                     f"v{version} ({decision.champion_accuracy:.4f}) by more than the allowed "
                     f"{rules.max_regression:.4f}")
    return found


def reason(decision: Decision, rules: Rules) -> str:
    """The gate's verdict as a sentence: the refusals, or why it passed."""
    broken = refusals(decision, rules)
    version = decision.champion_version
    if broken:
        words = "; ".join(broken)
    else:
        numbers = "" if decision.champion_accuracy is None else \
            _comparison_words(decision, rules)
        if decision.champion_accuracy is None:
            against = "no champion yet"
        elif decision.verdict == "better":
            against = f"significantly better than champion v{version}: {numbers}"
        elif decision.paired is None:
            against = f"not shown to be significant: {numbers}"
        elif decision.verdict == "not significant":
            against = (f"the difference from champion v{version} is not significant "
                       f"(alpha {rules.alpha}): {numbers}")
        else:
            against = f"champion v{version}: {numbers}"
        words = (f"test accuracy {decision.test_accuracy:.4f} >= "
                 f"{rules.min_test_accuracy:.4f}; {against}")
    if decision.measured and abs(decision.reported_accuracy - decision.test_accuracy) > 1e-6:
        words += (f" (measured by the gate on the staged TFLite file's {decision.images} test "
                  f"predictions; training reported {decision.reported_accuracy:.4f}, not used)")
    return words


def result_of(decision: Decision, rules: Rules) -> GateResult:
    """The decision and its wording as the gate's recorded result."""
    return GateResult(
        passed=decision.passed, reason=reason(decision, rules),
        test_accuracy=decision.test_accuracy, min_test_accuracy=rules.min_test_accuracy,
        max_regression=rules.max_regression, champion_version=decision.champion_version,
        champion_accuracy=decision.champion_accuracy, significant=decision.significant,
        verdict=decision.verdict, min_class_recall=rules.min_class_recall, alpha=rules.alpha,
        confidence=rules.confidence,
        comparison=decision.paired.as_dict() if decision.paired else None,
        per_class_recall=decision.recall, champion_per_class_recall=decision.champion_recall,
        refusals=refusals(decision, rules), reported_accuracy=decision.reported_accuracy,
        measured=decision.measured)


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
    `max_regression` below the champion's. `judge` decides, `reason` words it.
    """
    rules = Rules(min_test_accuracy=min_test_accuracy, max_regression=max_regression,
                  min_class_recall=min_class_recall, alpha=alpha, confidence=confidence)
    decision = judge(test_accuracy, rules, champion_version=champion_version,
                     champion_accuracy=champion_accuracy, classes=classes, labels=labels,
                     predictions=predictions, champion_predictions=champion_predictions)
    return result_of(decision, rules)


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
