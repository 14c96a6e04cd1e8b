"""The quality gate's decision."""

from __future__ import annotations

from rice_mlops.compute.gate import decide


def test_passes_without_champion_when_above_the_bar():
    result = decide(0.98, min_test_accuracy=0.97, max_regression=0.005)
    assert result.passed
    assert "no champion yet" in result.reason


def test_fails_below_the_bar_even_without_champion():
    result = decide(0.96, min_test_accuracy=0.97, max_regression=0.005)
    assert not result.passed
    assert "0.9600 is below the minimum 0.9700" in result.reason


def test_tolerates_a_regression_within_the_allowance():
    result = decide(0.991, min_test_accuracy=0.97, max_regression=0.005,
                    champion_version="3", champion_accuracy=0.995)
    assert result.passed
    assert "champion v3 at 0.9950" in result.reason


def test_fails_when_worse_than_champion_beyond_the_allowance():
    result = decide(0.985, min_test_accuracy=0.97, max_regression=0.005,
                    champion_version="3", champion_accuracy=0.995)
    assert not result.passed
    assert "worse than champion v3 (0.9950)" in result.reason


def test_reports_every_reason():
    result = decide(0.5, min_test_accuracy=0.97, max_regression=0.0,
                    champion_version="1", champion_accuracy=0.99)
    assert not result.passed
    assert "below the minimum" in result.reason and "worse than champion" in result.reason
    assert result.as_dict()["champion_accuracy"] == 0.99


def test_boundaries_are_inclusive():
    assert decide(0.97, min_test_accuracy=0.97, max_regression=0.0).passed
    assert decide(0.99, min_test_accuracy=0.5, max_regression=0.01,
                  champion_version="2", champion_accuracy=1.0).passed
