"""The labelling queue: an opt-in sample of /predict images with the model's answer beside
each, bounded in images and bytes, and never a failed or held prediction."""

from __future__ import annotations

import json
import os
import threading

import pytest

from rice_mlops.serving.labelling import LabellingQueue, waiting
from rice_mlops.serving.settings import Settings, SettingsError
from tests.helpers.serving_in_thread import (  # the serving tests' server and calls
    CLASSES,
    jpeg_bytes,
    post_json,
    request,
    rng_images,
    run_server,
)


def _predict(port, data: bytes, request_id: str, content_type="image/jpeg"):
    return request(port, "POST", "/predict", data,
                   {"Content-Type": content_type, "X-Request-Id": request_id})


def _multipart(data: bytes) -> tuple[str, bytes]:
    boundary = "rice-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"grain.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def test_every_sampled_image_is_kept_as_sent_with_the_models_answer_beside_it(
        model_dir, tmp_path):
    queue_dir = tmp_path / "labelling"
    images = [jpeg_bytes(image) for image in rng_images(3, size=40, seed=5)]
    for port, app in run_server(model_dir, labelling_dir=str(queue_dir),
                                labelling_sample_rate=1.0):
        answers = [_predict(port, images[0], "req-a")[1], _predict(port, images[1], "req-b")[1]]
        content_type, body = _multipart(images[2])
        answers.append(_predict(port, body, "req-c", content_type)[1])
        # A JSON array of pixels is no image to look at: not sampled.
        assert post_json(port, "/invocations", {"instances": rng_images(1).tolist()})[0] == 200
        app.labelling.close()
        _, metrics, _ = request(port, "GET", "/metrics")
    kept = sorted(queue_dir.glob("*.jpg"))
    assert len(kept) == 3 and waiting(queue_dir) == (3, sum(len(i) for i in images))
    by_request = {}
    for image in kept:
        record = json.loads(image.with_suffix(".json").read_text())
        by_request[record["request_id"]] = (image.read_bytes(), record)
        assert oct(image.stat().st_mode & 0o777) == "0o640"
    for request_id, data, answer in zip(["req-a", "req-b", "req-c"], images, answers,
                                        strict=True):
        kept_bytes, record = by_request[request_id]
        assert kept_bytes == data  # the multipart one too: the image, not the body
        assert record["predicted"] == answer["class"] and record["model_version"] == "7"
        assert set(record["probabilities"]) == set(CLASSES)
    assert b"rice_serving_labelling_sampled_total 3.0" in metrics
    assert b"rice_serving_labelling_dropped_total 0.0" in metrics


def test_no_image_is_kept_by_default(model_dir, tmp_path):
    for port, app in run_server(model_dir, labelling_dir=str(tmp_path / "labelling")):
        assert _predict(port, jpeg_bytes(rng_images(1, size=40)[0]), "req-a")[0] == 200
        assert app.labelling is None
    assert not (tmp_path / "labelling").exists()


def _queue(directory, drops, kept, **caps):
    return LabellingQueue(directory, rate=1.0, extract=lambda _type, body: body,
                          on_sampled=lambda: kept.append(1), on_drop=lambda: drops.append(1),
                          **{"max_images": 100, "max_bytes": 10**9, **caps})


def test_the_queue_stops_at_its_image_and_byte_caps_and_counts_what_it_drops(tmp_path):
    image = jpeg_bytes(rng_images(1, size=40)[0])
    drops, kept = [], []
    queue = _queue(tmp_path, drops, kept, max_images=3)
    for index in range(6):
        queue.offer("image/jpeg", image, lambda i=index: {"request_id": f"r{i}"})
    queue.close()
    assert waiting(tmp_path)[0] == 3 and len(kept) == 3 and len(drops) == 3
    assert len(list(tmp_path.glob("*.json"))) == 3

    drops, kept = [], []
    by_bytes = tmp_path / "bytes"
    queue = _queue(by_bytes, drops, kept, max_bytes=2 * len(image) + 1)
    for index in range(4):
        queue.offer("image/jpeg", image, lambda i=index: {"request_id": f"r{i}"})
    queue.close()
    assert waiting(by_bytes) == (2, 2 * len(image)) and len(drops) == 2
    # A server started again counts what is already there against the caps.
    again = _queue(by_bytes, drops, kept, max_bytes=2 * len(image) + 1)
    again.offer("image/jpeg", image, dict)
    again.close()
    assert waiting(by_bytes)[0] == 2 and len(drops) == 3


def test_a_stalled_writer_drops_samples_instead_of_holding_requests(tmp_path):
    image = jpeg_bytes(rng_images(1, size=40)[0])
    drops, kept = [], []
    stalled = threading.Event()
    queue = LabellingQueue(tmp_path, rate=1.0, max_images=1000, max_bytes=10**9,
                           extract=lambda _type, body: (stalled.wait(10), body)[1],
                           on_sampled=lambda: kept.append(1), on_drop=lambda: drops.append(1))
    for index in range(40):
        queue.offer("image/jpeg", image, lambda i=index: {"request_id": f"r{i}"})  # returns at once
    assert 40 - 8 - 1 <= len(drops) <= 40 - 8  # the writer may hold one besides the queue
    stalled.set()
    queue.close()
    assert len(kept) + len(drops) == 40 and waiting(tmp_path)[0] == len(kept)


def test_a_full_disk_is_a_counted_drop_and_leaves_no_half_pair(tmp_path, monkeypatch):
    from rice_mlops.serving import labelling

    real_create = labelling._create

    def disk_full_at_the_image(path, data):
        if path.suffix == ".jpg":
            raise OSError(28, "No space left on device")
        real_create(path, data)

    monkeypatch.setattr(labelling, "_create", disk_full_at_the_image)
    drops, kept = [], []
    queue = _queue(tmp_path, drops, kept)
    queue.offer("image/jpeg", jpeg_bytes(rng_images(1, size=40)[0]), dict)
    queue.close()
    assert drops == [1] and not kept and not list(tmp_path.iterdir())


def test_a_link_planted_in_the_queue_is_never_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    queue_dir = tmp_path / "queue"
    queue_dir.mkdir()
    os.symlink(target, queue_dir / "planted.jpg")
    assert waiting(queue_dir) == (0, 0)  # a link is not an image waiting
    drops, kept = [], []
    queue = _queue(queue_dir, drops, kept)
    from rice_mlops.serving import labelling

    with pytest.raises(OSError):
        labelling._create(queue_dir / "planted.jpg", b"\xff\xd8\xffx")
    queue.close()
    assert target.read_text() == "untouched"


def test_a_full_queue_drops_on_the_request_path_until_a_scan_finds_room(tmp_path,
                                                                          monkeypatch):
    """Once the writer finds the queue full, a sample is dropped and counted without a
    record made or a body queued; when a labeller has taken images away, the next scan
    (RESCAN_SECONDS after the queue was found full) lets samples in again."""
    import time

    import rice_mlops.serving.labelling as labelling

    monkeypatch.setattr(labelling, "RESCAN_SECONDS", 2.0)
    image = jpeg_bytes(rng_images(1, size=40)[0])
    drops, kept = [], []
    queue = _queue(tmp_path, drops, kept, max_images=1)
    queue.offer("image/jpeg", image, dict)
    queue.offer("image/jpeg", image, dict)  # the writer finds no room for this one
    deadline = time.monotonic() + 10
    while len(kept) + len(drops) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)

    def never():
        raise AssertionError("a record was made while the queue is known to be full")

    for _ in range(20):
        queue.offer("image/jpeg", image, never)
    assert len(kept) == 1 and len(drops) == 21
    for path in tmp_path.iterdir():  # a labeller takes the queued image away
        path.unlink()
    time.sleep(2.1)
    queue.offer("image/jpeg", image, lambda: {"request_id": "after"})
    queue.close()
    assert len(kept) == 2 and waiting(tmp_path)[0] == 1
    assert json.loads(next(tmp_path.glob("*.json")).read_text()) == {"request_id": "after"}


def test_a_request_not_drawn_for_the_sample_makes_no_record(tmp_path):
    def never():
        raise AssertionError("a record was made for a request that is not sampled")

    queue = LabellingQueue(tmp_path, rate=0.0, max_images=10, max_bytes=10**6,
                           extract=lambda _type, body: body, on_sampled=never, on_drop=never)
    for _ in range(100):
        queue.offer("image/jpeg", jpeg_bytes(rng_images(1, size=40)[0]), never)
    queue.close()
    assert not list(tmp_path.iterdir())


def test_a_body_that_is_not_a_jpeg_or_png_is_not_kept(tmp_path):
    drops, kept = [], []
    queue = _queue(tmp_path, drops, kept)
    queue.offer("image/jpeg", b"GIF89a...", dict)
    queue.close()
    assert drops == [1] and not list(tmp_path.iterdir())


@pytest.mark.parametrize("raw", ["1.5", "-0.1", "nan", "half"])
def test_a_sample_rate_outside_0_to_1_is_refused_with_the_variable_named(raw):
    with pytest.raises(SettingsError, match="RICE_SERVING_LABELLING_SAMPLE_RATE"):
        Settings.from_env({"RICE_SERVING_LABELLING_SAMPLE_RATE": raw})


def test_a_sample_rate_of_0_or_1_is_accepted():
    assert Settings.from_env({"RICE_SERVING_LABELLING_SAMPLE_RATE": "0"}
                             ).labelling_sample_rate == 0.0
    assert Settings.from_env({"RICE_SERVING_LABELLING_SAMPLE_RATE": "1"}
                             ).labelling_sample_rate == 1.0
