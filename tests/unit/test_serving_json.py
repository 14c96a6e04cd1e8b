"""/invocations' JSON decoding (rice_mlops.serving.decode): the same float32 pixels as the
orjson + np.asarray path it replaced, the same refusals, and hostile bodies refused in bounded
memory (their speed: benchmarks/json_decode.py).

Pure functions, no server and no model: the HTTP side is in test_serving.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rice_mlops.serving.decode import BadRequest, array_from_json, pixels_from_json
from tests.helpers.hostile_json import HOSTILE, RECTANGULAR
from tests.helpers.paths import REPO


def old_path(body: bytes) -> np.ndarray:
    """What the server did before simdjson (the reference for values and refusals)."""
    document = orjson.loads(body)
    (key,) = [k for k in ("instances", "inputs") if k in document]
    return np.asarray(document[key], dtype=np.float32)


def refusal(body: bytes) -> str:
    with pytest.raises(BadRequest) as caught:
        pixels_from_json(body)
    assert caught.value.status == 400
    return caught.value.message


def images(shape, seed=0, integers=True):
    rng = np.random.default_rng(seed)
    if integers:
        return rng.integers(0, 256, shape).tolist()
    return (rng.random(shape) * 255).tolist()


# --- the same float32 array as before ------------------------------------------------------

BODIES = {
    # the benchmark's body: json.dumps of floats, ", " separators
    "floats, spaced": lambda px: json.dumps({"instances": px}).encode(),
    "integers, compact": lambda px: orjson.dumps({"inputs": px}),
    "indented": lambda px: json.dumps({"instances": px}, indent=2).encode(),
    "tabs and CRLF": lambda px: json.dumps({"inputs": px}).replace(", ", ",\t\r\n").encode(),
    # the general structure check (simdjson's minified value) rather than the body's
    "with params": lambda px: json.dumps({"instances": px, "params": {"k": "[[,]]"}}).encode(),
    "escaped key": lambda px: json.dumps({"instances": px}).replace(
        '"instances"', '"\\u0069nstances"').encode(),
}


@pytest.mark.parametrize("kind", sorted(BODIES))
@pytest.mark.parametrize("integers", [True, False])
def test_valid_bodies_give_the_same_float32_array_as_before(kind, integers):
    px = images((3, 9, 17, 3), seed=5, integers=integers)
    body = BODIES[kind](px)
    got = pixels_from_json(body)
    assert got.dtype == np.float32 and got.shape == (3, 9, 17, 3)
    assert np.array_equal(got, old_path(body))


def test_rounding_to_float32_matches_numpy():
    values = [0, 0.1, 1e-45, 1e-300, 5e-324, 254.99999999999997, 255.000000001, 127.5,
              0.30000000000000004, 2.5e+1, 1E2, 9.999999999999999e-1, 1, 255]
    px = [[[(values * 3)[i:i + 3] for i in range(0, 24, 3)]] * 8]
    body = json.dumps({"instances": px}).encode()
    assert np.array_equal(pixels_from_json(body), old_path(body))
    assert pixels_from_json(body).max() == 255  # 255.000000001 rounds to 255.0 in float32


nested = st.recursive(st.integers(0, 255) | st.floats(0, 255),
                      lambda children: st.lists(children, max_size=4), max_leaves=40)


@st.composite
def arrays(draw):
    """Rectangular arrays of 1-4 dimensions (0 to 3 long), and ragged ones made from them."""
    shape = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
    value = np.arange(int(np.prod(shape)), dtype=float).reshape(shape).tolist()
    if draw(st.booleans()):
        return value
    # One sub-array somewhere grows or shrinks by one, or turns into a number.
    path, node = [], value
    while isinstance(node, list) and node and draw(st.booleans()):
        index = draw(st.integers(0, len(node) - 1))
        if not isinstance(node[index], list):
            break
        path.append(index)
        node = node[index]
    if isinstance(node, list):
        action = draw(st.sampled_from(["grow", "shrink", "number"]))
        if action == "grow":
            node.append(node[0] if node else 1.0)
        elif action == "shrink" and node:
            node.pop()
        elif path:
            parent = value
            for index in path[:-1]:
                parent = parent[index]
            parent[path[-1]] = 7.0
    return value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=arrays() | nested.filter(lambda v: isinstance(v, list)),
       extra=st.booleans())
def test_accepted_exactly_when_numpy_accepts_it(value, extra):
    """Any nesting of lists and numbers, on both structure checks (with "params": simdjson's
    minified value; without: the body). Ragged arrays that keep the count of numbers are
    spelled out in the next test."""
    document = {"instances": value, **({"params": {}} if extra else {})}
    body = json.dumps(document).encode()
    try:
        expected = np.asarray(value, dtype=np.float32)
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(BadRequest) as caught:
            array_from_json(body)
        assert RECTANGULAR in caught.value.message
    else:
        got = array_from_json(body)
        assert got.shape == expected.shape and np.array_equal(got, expected)


@pytest.mark.parametrize("extra", [False, True])
def test_ragged_arrays_with_the_right_count_are_refused(extra):
    """Each keeps N*H*W*3 numbers and the first elements' shape: only the structure differs."""
    good = np.zeros((2, 8, 8, 3)).tolist()

    def variant(change):
        px = json.loads(json.dumps(good))
        change(px)
        return json.dumps({"instances": px, **({"params": 1} if extra else {})}).encode()

    def pixels_2_and_4(px):  # a pixel of 2 channels, the next of 4
        px[0][3][5], px[0][3][6] = [1, 2], [3, 4, 5, 6]

    def rows_7_and_9(px):  # a row one pixel short, the next one pixel long
        px[1][6].pop()
        px[1][7].append([0, 0, 0])

    def pixel_flattened(px):  # three numbers in place of a pixel
        row = px[0][0]
        px[0][0] = [*row[:7], 0, 0, 0]

    def images_7_and_9_rows(px):
        px[0].pop()
        px[1].append([[0, 0, 0]] * 8)

    for change in (pixels_2_and_4, rows_7_and_9, pixel_flattened, images_7_and_9_rows):
        body = variant(change)
        assert RECTANGULAR in refusal(body), change.__name__
        with pytest.raises(ValueError):
            old_path(body)
    assert pixels_from_json(variant(lambda px: None)).shape == (2, 8, 8, 3)


# --- every refusal of the old path, with its message --------------------------------------


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"instances": np.zeros((40, 40, 3)).tolist()},
         "shaped (N, H, W, 3), got shape [40, 40, 3] (wrap a single image in a list)"),
        ({"instances": np.zeros((1, 10, 10, 4)).tolist()}, "got shape [1, 10, 10, 4]"),
        ({"instances": []}, "got shape [0]"),
        ({"instances": [[[[]]]]}, "got shape [1, 1, 1, 0]"),
        ({"instances": 7}, "got shape []"),
        ({"instances": [["a", "b"]]}, RECTANGULAR),
        ({"instances": "pixels"}, RECTANGULAR),
        ({"inputs": [[[[1, 2, None]]]]}, '"inputs" ' + RECTANGULAR),
        ({"instances": [[[[1, 2, True]]]]}, RECTANGULAR),
        ({"instances": [[[[1, 2, {"r": 3}]]]]}, RECTANGULAR),
        ({"instances": {"r": [1]}}, RECTANGULAR),
        ({"instances": None}, RECTANGULAR),
        ({"instances": [[[1, 2, 3]], [[1, 2]]]}, RECTANGULAR),
        ({"instances": [[[[1, 2, 3]]], [[1, 2, 3]]]}, RECTANGULAR),
        ({"instances": (np.ones((1, 10, 10, 3)) * 300).tolist()}, "in [0, 255]"),
        ({"instances": (np.ones((1, 10, 10, 3)) * -1).tolist()}, "in [0, 255]"),
        ({"instances": (np.ones((1, 10, 10, 3)) * 1e300).tolist()}, "in [0, 255]"),
        ({"instances": (np.ones((1, 10, 10, 3)) * 255.001).tolist()}, "in [0, 255]"),
        ({"instances": np.zeros((65, 8, 8, 3)).tolist()}, "batch size must be 1 to 64, got 65"),
        ({"instances": np.zeros((0, 8, 8, 3)).tolist()}, "got shape [0]"),
        ({"instances": np.zeros((1, 4, 4, 3)).tolist()}, "sides must be 8"),
        ({"instances": np.zeros((1, 8, 2049, 3)).tolist()}, "got 8x2049"),
        ({"instances": [], "inputs": []}, 'exactly one of "instances" or "inputs"'),
        ({"dataframe_split": {}}, "got keys: dataframe_split"),
        ({}, "got keys: none"),
        ([1, 2, 3], "expected a JSON object"),
        ("instances", "expected a JSON object"),
    ],
)
def test_bad_documents_are_400s_that_say_what_was_expected(document, fragment):
    assert fragment in refusal(json.dumps(document).encode())


# --- hostile bodies: a 400 that says why, in bounded memory ------------------------------------

@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bodies_are_400s_that_say_why(name):
    """How fast each is refused is measured in benchmarks/json_decode.py, not asserted here."""
    make, fragment = HOSTILE[name]
    body = make()
    assert len(body) <= 8 * 1024 * 1024  # RICE_SERVING_MAX_BODY_BYTES
    message = refusal(body)
    assert fragment in message, (name, message)
    assert len(message) < 1000  # 600,000 keys are not all listed


def test_many_keys_are_counted_not_listed():
    message = refusal(HOSTILE["600,000 keys"][0]())
    assert message.endswith("k000019 and 599980 more")


_PEAK = """
import resource, sys
from rice_mlops.serving.decode import BadRequest, pixels_from_json
body = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    pixels_from_json(body)
except BadRequest:
    pass
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("name", ["many numbers", "many tiny arrays", "many ragged arrays",
                                  "nested 100,000 deep", "600,000 keys"])
def test_hostile_bodies_cost_bounded_memory(name):
    """At most about 150 MB for the worst 8 MiB body (app.LARGE_JSON_BYTES lets one such
    request decode at a time); orjson + np.asarray took 270 MB for the tiny arrays."""
    body = HOSTILE[name][0]()
    peak_mib = int(subprocess.run(
        [sys.executable, "-c", _PEAK], input=body, capture_output=True, check=True,
        env={"PYTHONPATH": f"{REPO / 'include'}", "PATH": "/usr/bin:/bin"}).stdout)
    assert peak_mib < 20 * len(body) / 2**20 + 10, (name, peak_mib)
