"""The serving server's prediction log: one line per answered prediction with the proxy's
request id, bounded on disk, and never a failed or held prediction when the disk is full."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from rice_mlops.serving.prediction_log import FILE_NAME, PredictionLog, request_id
from tests.helpers.serving_in_thread import (  # the serving tests' server and calls
    CLASSES,
    jpeg_bytes,
    post_json,
    request,
    rng_images,
    run_server,
)


def lines(directory) -> list[dict]:
    return [json.loads(line) for line in (directory / FILE_NAME).read_text().splitlines()]


def stalled_writer(log: PredictionLog) -> threading.Event:
    """Make the log's writer hang on each line until the returned event is set."""
    stalled = threading.Event()
    handler = log._listener.handlers[0]
    emit = handler.emit
    handler.emit = lambda record: (stalled.wait(10), emit(record))
    return stalled


@pytest.fixture
def logged(model_dir, tmp_path):
    directory = tmp_path / "log"
    for port, app in run_server(model_dir, prediction_log_dir=str(directory)):
        yield port, app, directory


def test_each_answered_prediction_is_one_line_with_the_proxys_request_id(logged):
    port, app, directory = logged
    image = rng_images(1, size=48, seed=3)[0]
    status, answer, _ = request(port, "POST", "/predict", jpeg_bytes(image),
                                {"Content-Type": "image/jpeg", "X-Request-Id": "a1b2c3",
                                 "X-Rice-Shadow": "1"})
    assert status == 200
    status, batch, _ = post_json(port, "/invocations", {"instances": rng_images(2).tolist()})
    assert status == 200
    assert request(port, "POST", "/predict", b"not an image",
                   {"Content-Type": "image/jpeg"})[0] == 400  # refused: not a prediction
    app.close()  # a graceful stop writes what is queued
    first, second = lines(directory)
    assert first["request_id"] == "a1b2c3" and first["shadow"] is True
    assert first["classes"] == [answer["class"]] and first["endpoint"] == "/predict"
    assert np.allclose(first["probabilities"][0], [answer["probabilities"][c] for c in CLASSES],
                       atol=1e-4)
    assert first["model_version"] == "7" and first["run_id"] == "abc123"
    stats = first["input"][0]
    assert (stats["height"], stats["width"]) == (48, 48) and len(stats["mean"]) == 3
    assert second["request_id"] is None and second["shadow"] is False
    assert len(second["classes"]) == 2 and len(second["input"]) == 2
    assert second["classes"] == [CLASSES[int(np.argmax(p))] for p in batch["predictions"]]


@pytest.mark.parametrize("raw", [b"x" * 65, b"id with spaces", b"\xff\xfe", b"a\"b", b""])
def test_a_request_id_that_is_not_one_the_proxy_makes_is_not_kept(raw):
    assert request_id(raw) is None


def test_the_log_rotates_and_keeps_at_most_its_backups(tmp_path):
    drops = []
    log = PredictionLog(tmp_path, max_bytes=2000, backups=2, queue_size=10_000,
                        on_drop=lambda: drops.append(1))
    for index in range(500):
        log.record(request_id=f"r{index}", classes=["Basmati"])
    log.close()
    files = sorted(os.listdir(tmp_path))
    assert files == [FILE_NAME, f"{FILE_NAME}.1", f"{FILE_NAME}.2"]
    assert all((tmp_path / name).stat().st_size <= 2000 for name in files)
    assert json.loads((tmp_path / FILE_NAME).read_text().splitlines()[-1])["request_id"] == \
        "r499"
    assert not drops


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path):
    drops = []
    log = PredictionLog(tmp_path, max_bytes=10**6, backups=1, queue_size=5,
                        on_drop=lambda: drops.append(1))
    stalled = stalled_writer(log)  # a disk that hangs
    for index in range(50):
        log.record(request_id=f"r{index}")  # returns at once, whatever the disk does
    assert 50 - 5 - 1 <= len(drops) <= 50 - 5  # one record may already be in the writer's hand
    stalled.set()
    log.close()
    assert len((tmp_path / FILE_NAME).read_text().splitlines()) == 50 - len(drops)


def test_a_full_disk_answers_every_prediction_and_counts_the_lost_lines(model_dir,
                                                                        tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    directory = tmp_path / "log"
    directory.mkdir()
    os.symlink("/dev/full", directory / FILE_NAME)  # every write fails with ENOSPC
    for port, app in run_server(model_dir, prediction_log_dir=str(directory),
                                prediction_log_max_bytes=10**9):
        statuses = [post_json(port, "/invocations", {"instances": rng_images(1).tolist()})[0]
                    for _ in range(5)]
        app.prediction_log.close()
        _, metrics, _ = request(port, "GET", "/metrics")
    assert statuses == [200] * 5
    assert b"rice_serving_prediction_log_dropped_total 5.0" in metrics


def test_input_statistics_are_each_channels_exact_mean_and_spread():
    from rice_mlops.serving.prediction_log import input_statistics

    rng = np.random.default_rng(4)
    batch = rng.integers(0, 256, size=(3, 37, 53, 3), dtype=np.uint8)
    batch[2] = 200  # a flat image: no spread, never a negative variance's nan
    for stats, image in zip(input_statistics(batch), batch, strict=True):
        exact = image.astype(np.float64)
        assert (stats["height"], stats["width"]) == (37, 53)
        assert stats["mean"] == [round(float(v), 2) for v in exact.mean(axis=(0, 1))]
        assert np.allclose(stats["std"], exact.std(axis=(0, 1)), atol=0.006)
    assert input_statistics(batch)[2]["std"] == [0.0, 0.0, 0.0]


def test_pixels_waiting_for_their_statistics_are_bounded_in_bytes(tmp_path, monkeypatch):
    from rice_mlops.serving import prediction_log

    monkeypatch.setattr(prediction_log, "MAX_WAITING_PIXEL_BYTES", 3 * 64 * 64 * 3)
    drops = []
    log = PredictionLog(tmp_path, max_bytes=10**6, backups=1, queue_size=10_000,
                        on_drop=lambda: drops.append(1))
    stalled = stalled_writer(log)
    image = np.full((1, 64, 64, 3), 90, dtype=np.uint8)
    for index in range(10):
        log.record(pixels=image, request_id=f"r{index}")  # returns at once
    # Three images' bytes wait (the writer may already hold one of them): the rest is dropped.
    assert 10 - 3 - 1 <= len(drops) <= 10 - 3
    stalled.set()
    log.close()
    written = lines(tmp_path)
    assert len(written) == 10 - len(drops) and log._waiting_bytes == 0
    assert written[0]["input"] == [{"height": 64, "width": 64, "mean": [90.0] * 3,
                                    "std": [0.0] * 3}]
