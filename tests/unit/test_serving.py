"""The serving HTTP server: every endpoint, every kind of bad input, concurrent clients. Its
bounds (framing, limits, deadlines, admission, metrics): test_serving_bounds.py."""

from __future__ import annotations

import http.client
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from tests.helpers.serving_in_thread import (
    CLASSES,
    jpeg_bytes,
    post_json,
    request,
    rng_images,
)


def test_ping_health_version_metadata(server):
    status, body, _ = request(server, "GET", "/ping")
    assert status == 200 and body == b""
    assert request(server, "GET", "/health")[1] == {"status": "ok"}
    assert request(server, "GET", "/version")[1]["model_version"] == "7"
    status, meta, _ = request(server, "GET", "/metadata")
    assert status == 200
    assert meta["classes"] == CLASSES
    assert meta["model_version"] == "7" and meta["run_id"] == "abc123"
    assert meta["source_commit"] == "9fceb02"
    assert meta["input"]["shape"] == [-1, -1, -1, 3]
    assert meta["input"]["model_image_size"] == 32


@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_invocations_match_keras(server, keras_model, key):
    images = rng_images(3)
    status, body, _ = post_json(server, "/invocations", {key: images.tolist()})
    assert status == 200, body
    predictions = np.asarray(body["predictions"])
    assert predictions.shape == (3, 5)
    expected = keras_model.predict(images, verbose=0)
    assert np.abs(predictions - expected).max() < 1e-5


def test_predict_jpeg_png_and_multipart(server, keras_model):
    pixels = rng_images(1, size=60, seed=4)[0]
    for content_type, fmt in (("image/jpeg", "JPEG"), ("image/png", "PNG")):
        data = jpeg_bytes(pixels, fmt)
        status, body, _ = request(server, "POST", "/predict", data,
                                  {"Content-Type": content_type})
        assert status == 200, body
        decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
        expected = keras_model.predict(decoded[None], verbose=0)[0]
        got = np.array([body["probabilities"][c] for c in CLASSES])
        assert np.abs(got - expected).max() < 1e-5
        assert body["class"] == CLASSES[int(np.argmax(expected))]

    boundary = "XyZboundary"
    data = jpeg_bytes(pixels)
    multipart = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                 f"filename=\"Arborio (1).jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() \
        + data + f"\r\n--{boundary}--\r\n".encode()
    status, body, _ = request(server, "POST", "/predict", multipart,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, body
    assert set(body["probabilities"]) == set(CLASSES)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"instances": rng_images(1)[0].tolist()}, "shaped (N, H, W, 3), got shape [40, 40, 3]"),
        ({"instances": np.zeros((1, 10, 10, 4)).tolist()}, "got shape [1, 10, 10, 4]"),
        ({"instances": [["a", "b"]]}, "rectangular array of numbers"),
        ({"instances": [[[1, 2, 3]], [[1, 2]]]}, "rectangular array of numbers"),
        ({"instances": (np.ones((1, 10, 10, 3)) * 300).tolist()}, "in [0, 255]"),
        ({"instances": (np.ones((1, 10, 10, 3)) * -1).tolist()}, "in [0, 255]"),
        ({"instances": [], "inputs": []}, 'exactly one of "instances" or "inputs"'),
        ({"dataframe_split": {}}, "got keys: dataframe_split"),
        ([1, 2, 3], "expected a JSON object"),
        ({"instances": np.zeros((1, 4, 4, 3)).tolist()}, "sides must be 8"),
    ],
)
def test_invocations_bad_input_is_a_400_that_says_what_was_expected(server, document, fragment):
    status, body, _ = post_json(server, "/invocations", document)
    assert status == 400
    assert body["error_code"] == "BAD_REQUEST"
    assert fragment in body["message"]


def test_invocations_not_json_and_wrong_content_type(server):
    status, body, _ = request(server, "POST", "/invocations", b"{not json",
                              {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in body["message"]
    status, body, _ = request(server, "POST", "/invocations", b"1,2,3",
                              {"Content-Type": "text/csv"})
    assert status == 415 and "application/json" in body["message"]


@pytest.mark.parametrize("body", [
    b'{"instances":[[[[NaN,1,2]]]]}', b'{"instances":[[[[-9223372036854775809,1,2]]]]}',
    b'{"instances":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"instances":[[[[1,2,3]]]],"instances":[[[[1,2,3]]]]}', b'{"instances":[], "x":"\xff"}',
    b'{"instances":[[[[1,2],[3,4,5,6]]]]}',
], ids=["NaN", "big integer", "deep", "duplicate key", "not UTF-8", "ragged"])
def test_invocations_hostile_json_is_a_400(server, body):
    """More shapes, without a server, in test_serving_json.py."""
    status, answer, _ = request(server, "POST", "/invocations", body,
                                {"Content-Type": "application/json"})
    assert status == 400 and answer["error_code"] == "BAD_REQUEST", answer


def test_predict_rejects_non_images_and_other_formats(server):
    status, body, _ = request(server, "POST", "/predict", b"hello",
                              {"Content-Type": "image/jpeg"})
    assert status == 400 and "not a readable JPEG or PNG" in body["message"]
    gif = jpeg_bytes(np.zeros((20, 20, 3)), "GIF")
    status, body, _ = request(server, "POST", "/predict", gif, {"Content-Type": "image/png"})
    assert status == 400 and "expected a JPEG or PNG image, got GIF" in body["message"]
    status, body, _ = request(server, "POST", "/predict", b"x", {"Content-Type": "text/plain"})
    assert status == 415


def test_body_over_the_limit_is_413_without_being_read(server):
    big = b"0" * 500_000
    status, body, response = request(server, "POST", "/predict", big,
                                      {"Content-Type": "image/jpeg"})
    assert status == 413
    assert "exceeds the limit of 400000 bytes" in body["message"]


def test_unknown_route_wrong_method_and_missing_length(server):
    status, body, _ = request(server, "GET", "/nope")
    assert status == 404 and "/invocations" in body["message"]
    status, body, response = request(server, "GET", "/invocations")
    assert status == 405 and response.getheader("Allow") == "POST"
    status, body, response = request(server, "DELETE", "/ping")
    assert status == 405 and "use GET" in body["message"]
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Type", "image/jpeg")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 411
    connection.close()


def test_concurrent_clients_get_their_own_answers(server, keras_model):
    images = rng_images(16, seed=9)
    expected = keras_model.predict(images, verbose=0)

    def one(i):
        return post_json(server, "/invocations", {"instances": images[i:i + 1].tolist()})

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(16)))
    for i, (status, body, _) in enumerate(results):
        assert status == 200
        assert np.abs(np.asarray(body["predictions"][0]) - expected[i]).max() < 1e-5
