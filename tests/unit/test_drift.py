"""Drift detection (rice_mlops.monitoring.drift) on the input statistics of real rice images,
computed by the serving server's own function, with a stand-in for the classifier's outputs
(a predicted class and a top probability per image): what a shift of the grains, the light
or the class mix does to the verdict, how often an unshifted stream raises a false alarm, and
what the reader makes of log lines that are not this model's predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from rice_mlops.monitoring.drift import (
    DriftReferenceError,
    LiveWindow,
    Reference,
    compare,
    holm,
    observe,
    read_window,
)
from rice_mlops.serving.prediction_log import PredictionLog, input_statistics

CLASSES = ("Arborio", "Basmati", "Ipsala", "Jasmine", "Karacadag")
PER_CLASS = 120  # images per class: half for the reference, half for the live pool


def statistics_of(path, brightness: float = 1.0) -> dict:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        if brightness != 1.0:
            rgb = ImageEnhance.Brightness(rgb).enhance(brightness)
        return input_statistics(np.asarray(rgb)[None])[0]


@pytest.fixture(scope="module")
def images(real_data) -> dict[str, list]:
    return {name: sorted((real_data / "train" / name).iterdir())[:PER_CLASS]
            for name in CLASSES}


def rows(paths_by_class, rng, *, brightness=1.0, confidence=(30, 1.2)):
    """(class, probabilities, input statistics) per image; the top probability is drawn from
    Beta(*confidence), the stand-in for the model's own certainty."""
    out = []
    for name, paths in paths_by_class.items():
        for path in paths:
            top = float(rng.beta(*confidence))
            rest = (1 - top) / (len(CLASSES) - 1)
            probabilities = [top if c == name else rest for c in CLASSES]
            out.append((name, probabilities, statistics_of(path, brightness)))
    return out


def window_of(sampled) -> LiveWindow:
    names, probabilities, inputs = zip(*sampled, strict=True)
    return LiveWindow(observe(names, probabilities, inputs))


@pytest.fixture(scope="module")
def reference_and_pool(images):
    rng = np.random.default_rng(7)
    half = PER_CLASS // 2
    reference_rows = rows({n: p[:half] for n, p in images.items()}, rng)
    pool = rows({n: p[half:] for n, p in images.items()}, rng)
    names, probabilities, inputs = zip(*reference_rows, strict=True)
    reference = Reference("7", CLASSES, observe(names, probabilities, inputs))
    return reference, pool


def test_unshifted_windows_of_the_same_images_rarely_raise_an_alarm(reference_and_pool):
    reference, pool = reference_and_pool
    rng = np.random.default_rng(11)
    verdicts = []
    for _ in range(20):
        sampled = [pool[i] for i in rng.choice(len(pool), size=300, replace=True)]
        verdicts.append(compare(reference, window_of(sampled), min_predictions=200,
                                alpha=0.01).verdict)
    alarms = verdicts.count("drift")
    print(f"false alarms: {alarms} of {len(verdicts)} unshifted windows (alpha 0.01, Holm)")
    assert set(verdicts) <= {"drift", "no drift"} and alarms <= 2


def test_brighter_light_is_drift_in_the_input_statistics(images, reference_and_pool):
    reference, _ = reference_and_pool
    rng = np.random.default_rng(3)
    brighter = rows({n: p[PER_CLASS // 2:] for n, p in images.items()}, rng, brightness=1.25)
    report = compare(reference, window_of(brighter), min_predictions=200, alpha=0.01)
    assert report.verdict == "drift"
    drifted = {check.name for check in report.drifted}
    assert {"input mean_r", "input mean_g", "input mean_b"} <= drifted
    assert "class mix" not in drifted and "confidence" not in drifted
    assert report.summary().startswith("drift in ") and "300 predictions" in report.summary()


def test_another_share_of_varieties_is_drift_in_the_class_mix(images, reference_and_pool):
    reference, _ = reference_and_pool
    rng = np.random.default_rng(5)
    two = rows({n: images[n][PER_CLASS // 2:] for n in ("Arborio", "Basmati")}, rng)
    report = compare(reference, window_of(two * 3), min_predictions=200, alpha=0.01)
    assert report.verdict == "drift"
    assert "class mix" in {check.name for check in report.drifted}


def test_a_less_certain_model_is_drift_in_confidence(images, reference_and_pool):
    reference, _ = reference_and_pool
    rng = np.random.default_rng(9)
    unsure = rows({n: p[PER_CLASS // 2:] for n, p in images.items()}, rng, confidence=(4, 2))
    report = compare(reference, window_of(unsure), min_predictions=200, alpha=0.01)
    assert [check.name for check in report.drifted] == ["confidence"]
    assert report.summary().startswith("drift in confidence (p=")


def test_a_short_window_is_not_enough_data_never_an_alarm(reference_and_pool):
    reference, pool = reference_and_pool
    report = compare(reference, LiveWindow(window_of(pool[:37]).observations,
                                           {"another model version (6)": 4}),
                     min_predictions=500, alpha=0.01)
    assert report.verdict == "not enough data" and report.checks == ()
    assert report.summary() == "not enough data: 37 < 500 predictions; 4 lines left out"
    empty = compare(reference, read_window([], model_version="7", since=0, until=1),
                    min_predictions=500, alpha=0.01)
    assert empty.summary() == "not enough data: 0 < 500 predictions"


def test_the_servers_own_log_lines_are_read_and_the_rest_is_counted_by_reason(tmp_path,
                                                                              reference_and_pool):
    _, pool = reference_and_pool
    dropped = []
    log = PredictionLog(tmp_path, max_bytes=1 << 20, backups=1, queue_size=100,
                        on_drop=lambda: dropped.append(1))
    for name, probabilities, stats in pool[:5]:
        log.record(request_id="a" * 32, shadow=False, endpoint="/predict", model_version="7",
                   run_id="r", classes=[name], probabilities=[probabilities], input=[stats])
    log.record(request_id="b" * 32, shadow=True, endpoint="/predict", model_version="7",
               run_id="r", classes=[pool[0][0]], probabilities=[pool[0][1]], input=[pool[0][2]])
    log.record(request_id="c" * 32, shadow=False, endpoint="/predict", model_version="6",
               run_id="q", classes=[pool[0][0]], probabilities=[pool[0][1]], input=[pool[0][2]])
    log.close()
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    good = json.loads(lines[0])
    future = json.dumps({**good, "time": 4e9})
    nan_input = json.dumps({**good, "input": [{**good["input"][0], "mean": [math.nan] * 3}]})
    uneven = json.dumps({**good, "classes": good["classes"] * 2})
    hostile = [lines[0][:40], "not json", "[1, 2]", future, nan_input, uneven, "x" * 70_000,
               json.dumps({**good, "time": "yesterday"})]
    window = read_window(lines + hostile, model_version="7", since=0, until=3e9)
    assert window.observations.count == 5 and not dropped
    assert window.observations.classes == tuple(name for name, *_ in pool[:5])
    torn = "not a prediction line (torn, corrupt or another format)"
    assert window.skipped == {"shadow copies (the candidate's answers)": 1,
                              "another model version (6)": 1,
                              "after the window (later, or a clock ahead)": 1,
                              torn: 6, "too long": 1}


@pytest.mark.parametrize("mutate, says", [
    (lambda d: d.pop("values"), "not a drift reference"),
    (lambda d: d["values"].update(confidence=[math.nan] * len(d["classes"])), "finite"),
    (lambda d: d["values"].update(width=[1.0]), "one per prediction"),
    (lambda d: d.update(classes=["Wild"] * len(d["classes"])), "outside its class names"),
    (lambda d: d.update(classes=[]), "1 to 100000"),
])
def test_a_reference_from_mlflow_is_checked_before_it_is_compared_with(
        reference_and_pool, mutate, says):
    reference, _ = reference_and_pool
    again = Reference.from_json(reference.to_json())
    assert again.class_names == reference.class_names
    assert again.observations.classes == reference.observations.classes
    data = json.loads(reference.to_json())
    mutate(data)
    with pytest.raises(DriftReferenceError, match=says):
        Reference.from_json(json.dumps(data))


def test_holm_adjusts_like_its_definition():
    # sorted p: 0.01, 0.02, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.02), max(0.04, 0.04)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


@pytest.mark.parametrize("stored, expected", [
    (None, 1000 - 2 * 3600),  # no watermark yet: as far back as allowed
    (json.dumps({"until": 900.5}), 900.5),
    (json.dumps({"until": -1e12}), 1000 - 2 * 3600),  # older than allowed
    (json.dumps({"until": 5000}), 1000),  # a clock ahead: an empty window, not a negative one
    (json.dumps({"until": "NaN"}), 1000 - 2 * 3600),
    ("not json", 1000 - 2 * 3600), (json.dumps([1, 2]), 1000 - 2 * 3600),
])
def test_a_window_starts_at_the_watermark_within_bounds(stored, expected):
    from rice_mlops.stages.monitoring import window_start

    assert window_start(stored, 1000.0, 2) == expected


def test_a_streamed_window_holds_what_observe_computes_from_the_same_predictions():
    """read_window keeps typed columns, not the parsed lines: the same numbers, class by class
    and feature by feature, as `observe` on the same rows (a swapped column would show)."""
    from rice_mlops.monitoring.drift import observe, read_window

    rng = np.random.default_rng(4)
    names = ["Arborio", "Basmati", "Ipsala"]
    rows = []
    for i in range(300):
        p = rng.dirichlet(np.ones(3)).round(4).tolist()
        rows.append((names[i % 3], p, {"height": 200 + i, "width": 150 + i % 7,
                                       "mean": rng.random(3).tolist(),
                                       "std": rng.random(3).tolist()}))
    lines = [json.dumps({"time": 10.0 + i, "model_version": "3", "classes": [c],
                         "probabilities": [p], "input": [s]}) for i, (c, p, s) in enumerate(rows)]
    window = read_window(lines, model_version="3", since=0, until=1e6)
    expected = observe([c for c, _, _ in rows], [p for _, p, _ in rows], [s for *_, s in rows])
    assert window.observations.classes == expected.classes
    for feature, values in expected.values.items():
        np.testing.assert_array_equal(window.observations.values[feature], values)
    empty = read_window([], model_version="3", since=0, until=1)
    assert empty.observations.count == 0
    assert all(len(v) == 0 for v in empty.observations.values.values())
