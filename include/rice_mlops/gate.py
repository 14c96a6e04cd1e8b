"""The quality gate: an absolute bar and a champion/challenger comparison, as a pure function."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    test_accuracy: float
    min_test_accuracy: float
    max_regression: float
    champion_version: str | None = None
    champion_accuracy: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def decide(
    test_accuracy: float,
    *,
    min_test_accuracy: float,
    max_regression: float,
    champion_version: str | None = None,
    champion_accuracy: float | None = None,
) -> GateResult:
    """Pass only when the challenger clears the bar and is not worse than the champion by more
    than `max_regression` (both accuracies measured on the same test split)."""
    common = {"test_accuracy": test_accuracy, "min_test_accuracy": min_test_accuracy,
              "max_regression": max_regression, "champion_version": champion_version,
              "champion_accuracy": champion_accuracy}
    reasons = []
    if test_accuracy < min_test_accuracy:
        reasons.append(f"test accuracy {test_accuracy:.4f} is below the minimum "
                       f"{min_test_accuracy:.4f}")
    if champion_accuracy is not None and test_accuracy < champion_accuracy - max_regression:
        reasons.append(f"test accuracy {test_accuracy:.4f} is worse than champion "
                       f"v{champion_version} ({champion_accuracy:.4f}) by more than the allowed "
                       f"{max_regression:.4f}")
    if reasons:
        return GateResult(passed=False, reason="; ".join(reasons), **common)
    against = (f"champion v{champion_version} at {champion_accuracy:.4f}"
               if champion_accuracy is not None else "no champion yet")
    return GateResult(passed=True, reason=f"test accuracy {test_accuracy:.4f} >= "
                      f"{min_test_accuracy:.4f}; {against}", **common)
