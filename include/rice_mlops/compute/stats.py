"""Sampling noise in test-set comparisons: McNemar's exact test and confidence intervals.

Pure functions on counts (standard library only), so the gate, the model card and the tests
share one implementation that a hand calculation can check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist


def z_value(confidence: float) -> float:
    """The two-sided normal quantile, e.g. 1.96 for 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} must be between 0 and 1 (exclusive)")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    Under the null both models are equally often right where they disagree, so b ~
    Binomial(b + c, 1/2); the p-value doubles the smaller tail (capped at 1). Exact integer
    arithmetic: no normal approximation, which is poor for the few disagreements we expect.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts cannot be negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def wilson_interval(successes: int, total: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (behaves at 0 and 100 %, unlike Wald's)."""
    if total <= 0:
        return (0.0, 1.0)
    z = z_value(confidence)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference_interval(b: int, c: int, total: int, confidence: float
                               ) -> tuple[float, float]:
    """Interval for accuracy(challenger) - accuracy(champion) on the same images.

    Agresti & Min (2005): a Wald interval after adding 1/2 to each of the four cells of the
    paired table, which keeps its coverage near nominal when b and c are small (the plain
    Wald interval collapses to a point when the models never disagree).
    """
    if total <= 0:
        return (-1.0, 1.0)
    z = z_value(confidence)
    b2, c2, n2 = b + 0.5, c + 0.5, total + 2
    difference = (b2 - c2) / n2
    spread = math.sqrt(max(0.0, (b2 + c2) - (b2 - c2) ** 2 / n2)) / n2
    return (max(-1.0, difference - z * spread), min(1.0, difference + z * spread))


@dataclass(frozen=True)
class PairedComparison:
    """Two models scored on the same images."""

    n: int
    challenger_correct: int
    champion_correct: int
    challenger_only: int  # b: the challenger right, the champion wrong
    champion_only: int  # c: the champion right, the challenger wrong
    p_value: float
    difference: float  # challenger - champion accuracy, point estimate
    interval: tuple[float, float]
    confidence: float

    @property
    def challenger_accuracy(self) -> float:
        return self.challenger_correct / self.n if self.n else 0.0

    @property
    def champion_accuracy(self) -> float:
        return self.champion_correct / self.n if self.n else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "interval": list(self.interval),
                "challenger_accuracy": self.challenger_accuracy,
                "champion_accuracy": self.champion_accuracy}


def compare_paired(labels: Sequence[int], challenger: Sequence[int], champion: Sequence[int],
                   confidence: float) -> PairedComparison:
    """The paired table, McNemar's p-value and the difference's interval."""
    if not len(labels) == len(challenger) == len(champion):
        raise ValueError(f"predictions for {len(challenger)} and {len(champion)} images, "
                         f"labels for {len(labels)}: the models must see the same images")
    mine = [p == y for p, y in zip(challenger, labels, strict=True)]
    theirs = [p == y for p, y in zip(champion, labels, strict=True)]
    b = sum(m and not t for m, t in zip(mine, theirs, strict=True))
    c = sum(t and not m for m, t in zip(mine, theirs, strict=True))
    n = len(labels)
    return PairedComparison(
        n=n, challenger_correct=sum(mine), champion_correct=sum(theirs), challenger_only=b,
        champion_only=c, p_value=mcnemar_exact_p(b, c),
        difference=(b - c) / n if n else 0.0,
        interval=paired_difference_interval(b, c, n, confidence), confidence=confidence)


def per_class_recall(labels: Sequence[int], predictions: Sequence[int],
                     classes: Sequence[str]) -> dict[str, dict]:
    """{class: {"recall", "correct", "support"}} (recall 0 for a class with no images)."""
    result = {}
    for index, name in enumerate(classes):
        support = sum(1 for y in labels if y == index)
        correct = sum(1 for y, p in zip(labels, predictions, strict=True) if y == p == index)
        result[name] = {"recall": correct / support if support else 0.0, "correct": correct,
                        "support": support}
    return result
