"""The noise-aware gate: McNemar's exact test, intervals and the rules built on them."""

from __future__ import annotations

import math

import pytest

from rice_mlops.compute.gate import Decision, Rules, decide, gate_table, judge, reason
from rice_mlops.compute.stats import (
    compare_paired,
    mcnemar_exact_p,
    paired_difference_interval,
    per_class_recall,
    wilson_interval,
)
from rice_mlops.core.model_registry import gate_tags

CLASSES = ["Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag"]


def test_mcnemar_exact_p_matches_a_hand_calculation():
    # b=1, c=9: n=10; P(X<=1) = (C(10,0)+C(10,1))/2^10 = 11/1024; two-sided 22/1024.
    assert mcnemar_exact_p(1, 9) == pytest.approx(22 / 1024, abs=1e-15)
    assert mcnemar_exact_p(9, 1) == mcnemar_exact_p(1, 9)
    # b=0, c=5: 2 * 1/32 = 0.0625, not significant at 0.05 although every disagreement is lost.
    assert mcnemar_exact_p(0, 5) == 0.0625
    assert mcnemar_exact_p(0, 6) == 2 / 64
    assert mcnemar_exact_p(3, 3) == 1.0 and mcnemar_exact_p(0, 0) == 1.0


def test_intervals_behave_at_the_edges():
    low, high = wilson_interval(100, 100, 0.95)
    assert high == 1.0 and 0.96 < low < 0.97  # 100/100 is not "certainly 100 %"
    low, high = paired_difference_interval(0, 0, 1000, 0.95)
    assert low < 0 < high  # never disagreeing still leaves an interval
    low, high = paired_difference_interval(30, 5, 1000, 0.95)
    assert 0 < low < 0.025 < high


def _labels(n_per_class: int = 40) -> list[int]:
    return [i for i in range(len(CLASSES)) for _ in range(n_per_class)]


def test_equal_but_for_two_images_passes_only_as_not_significant():
    labels = _labels()
    champion = list(labels)
    champion[0] = 1  # the champion misses two images the challenger gets right
    champion[50] = 2
    result = decide(1.0, min_test_accuracy=0.9, max_regression=0.005, champion_version="4",
                    classes=CLASSES, labels=labels, predictions=list(labels),
                    champion_predictions=champion, min_class_recall=0.9)
    assert result.passed
    assert result.significant is False and result.verdict == "not significant"
    assert result.comparison["challenger_only"] == 2 and result.comparison["champion_only"] == 0
    assert result.comparison["p_value"] == 0.5
    assert "not significant" in result.reason
    assert result.as_dict()["significant"] is False


def test_a_clear_lead_is_significant():
    labels = _labels()
    champion = [(y + 1) % 5 if i % 10 == 0 else y for i, y in enumerate(labels)]  # 20 misses
    result = decide(1.0, min_test_accuracy=0.9, max_regression=0.005, champion_version="4",
                    classes=CLASSES, labels=labels, predictions=list(labels),
                    champion_predictions=champion)
    assert result.passed and result.significant is True and result.verdict == "better"
    assert result.comparison["p_value"] == pytest.approx(2 / 2**20)


def test_significantly_worse_is_refused():
    labels = _labels()
    challenger = [(y + 1) % 5 if i % 10 == 0 else y for i, y in enumerate(labels)]
    result = decide(0.9, min_test_accuracy=0.5, max_regression=1.0, champion_version="4",
                    classes=CLASSES, labels=labels, predictions=challenger,
                    champion_predictions=list(labels))
    assert not result.passed and result.verdict == "worse"
    assert "significantly worse than champion v4" in result.reason


def test_a_class_below_the_recall_floor_is_refused_by_name():
    labels = _labels()
    challenger = list(labels)
    for i in range(120, 126):  # Jasmine: 34/40 = 0.85
        challenger[i] = 0
    result = decide(0.97, min_test_accuracy=0.9, max_regression=0.005, classes=CLASSES,
                    labels=labels, predictions=challenger, min_class_recall=0.9)
    assert not result.passed
    assert "recall of class Jasmine is 0.8500 (34/40), below the floor 0.9000" in result.reason
    assert "Arborio" not in result.reason
    assert "| recall Jasmine | 85.00 % ✗ |" in gate_table(result.as_dict())


def test_estimate_more_than_max_regression_below_is_refused_even_if_not_significant():
    labels = _labels()
    challenger = list(labels)
    challenger[0] = 1
    challenger[41] = 2  # two losses: p = 0.5, but 1 point below with 0.5 allowed
    result = decide(0.99, min_test_accuracy=0.9, max_regression=0.005, champion_version="2",
                    classes=CLASSES, labels=labels, predictions=challenger,
                    champion_predictions=list(labels))
    assert not result.passed and result.significant is False
    assert "by more than the allowed 0.0050" in result.reason


def test_gate_table_and_tags_carry_the_numbers():
    labels = _labels()
    champion = list(labels)
    champion[3] = 4
    document = decide(1.0, min_test_accuracy=0.9, max_regression=0.005, champion_version="7",
                      classes=CLASSES, labels=labels, predictions=list(labels),
                      champion_predictions=champion).as_dict()
    table = document["table"]
    assert "| accuracy | 100.00 % | 99.50 % |" in table
    assert "McNemar exact p = 1" in table and "champion v7" in table
    tags = gate_tags(True, document["reason"], document)
    assert tags["rice.gate_significant"] == "false"
    assert tags["rice.gate_verdict"] == "not significant"
    assert float(tags["rice.gate_p_value"]) == 1.0
    assert tags["rice.gate_difference"].startswith("+0.005000 [")


def test_per_class_recall_and_paired_counts_agree():
    labels = [0, 0, 1, 1]
    recall = per_class_recall(labels, [0, 1, 1, 1], ["a", "b"])
    assert recall == {"a": {"recall": 0.5, "correct": 1, "support": 2},
                      "b": {"recall": 1.0, "correct": 2, "support": 2}}
    paired = compare_paired(labels, [0, 1, 1, 1], [1, 0, 1, 0], 0.95)
    assert (paired.challenger_only, paired.champion_only) == (2, 1)
    assert math.isclose(paired.difference, 0.25)
    with pytest.raises(ValueError, match="same images"):
        compare_paired(labels, [0], [0], 0.95)


def test_smoke_budgets_refuse_an_image_too_large_or_too_slow():
    from rice_mlops.release.budgets import BudgetError, check, parse_probe

    fine = check(size_bytes=231_000_000, latencies_ms=[3.0, 4.0, 5.0], max_image_mb=400,
                 max_p50_ms=250)
    assert fine["passed"] and fine["p50_ms"] == 4.0 and fine["image_mb"] == 231.0
    big = check(size_bytes=401_000_000, latencies_ms=[3.0], max_image_mb=400, max_p50_ms=250)
    assert not big["passed"] and "image size 401.0 MB is over the budget 400.0 MB" in big["reason"]
    slow = check(size_bytes=1, latencies_ms=[10.0, 300.0, 301.0], max_image_mb=400,
                 max_p50_ms=250)
    assert not slow["passed"] and "p50 latency 300.00 ms is over the budget" in slow["reason"]
    output = 'INFO server up\n{"latencies_ms": [1.5, 2.5]}\nINFO stopping\n'
    assert parse_probe(output) == [1.5, 2.5]
    for bad in ("", "no json", '{"latencies_ms": []}', '{"latencies_ms": [-1]}'):
        with pytest.raises(BudgetError):
            parse_probe(bad)


def test_the_bar_is_held_against_measured_predictions_not_the_reported_accuracy():
    """Issue 20, item 4: reported 0.99 in XCom, actual 0.90, bar 0.97 must not pass."""
    labels = _labels(20)  # 100 images
    predictions = list(labels)
    for index in range(0, 100, 10):  # ten wrong: 0.90, two per class
        predictions[index] = (labels[index] + 1) % len(CLASSES)
    result = decide(0.99, min_test_accuracy=0.97, max_regression=0.005, classes=CLASSES,
                    labels=labels, predictions=predictions, min_class_recall=0.0)
    assert not result.passed
    assert result.test_accuracy == pytest.approx(0.90)
    assert result.reported_accuracy == 0.99 and result.measured
    assert "test accuracy 0.9000 is below the minimum 0.9700" in result.reason
    assert "training reported 0.9900, not used" in result.reason
    # And the other way: an under-reported but good model is judged on what it does.
    assert decide(0.10, min_test_accuracy=0.97, max_regression=0.005, classes=CLASSES,
                  labels=labels, predictions=list(labels)).passed


def test_the_gate_refuses_predictions_that_do_not_cover_the_labels():
    with pytest.raises(ValueError, match="predictions for"):
        decide(0.99, min_test_accuracy=0.5, max_regression=0.0, classes=CLASSES,
               labels=_labels(2), predictions=[0, 1])


def test_the_decision_is_typed_and_worded_apart():
    """`judge` decides with no words; `reason` words the same decision; `decide` is both."""
    labels = _labels()
    predictions = list(labels)
    predictions[:12] = [1] * 12  # Arborio: 28/40 right, under a 0.9 floor
    rules = Rules(min_test_accuracy=0.9, max_regression=0.005, min_class_recall=0.9)
    decision = judge(0.99, rules, classes=CLASSES, labels=labels, predictions=predictions)
    assert isinstance(decision, Decision) and not decision.passed
    assert decision.weak_classes == ("Arborio",) and not decision.below_bar
    assert decision.measured and decision.images == 200 and decision.test_accuracy == 0.94
    assert decision.verdict == "no champion" and decision.significant is None
    words = reason(decision, rules)
    assert words.startswith("recall of class Arborio is 0.7000 (28/40), below the floor 0.9000")
    assert "training reported 0.9900, not used" in words
    assert decide(0.99, min_test_accuracy=0.9, max_regression=0.005, min_class_recall=0.9,
                  classes=CLASSES, labels=labels, predictions=predictions).reason == words
