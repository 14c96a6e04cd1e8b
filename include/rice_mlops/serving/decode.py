"""Request bodies to pixels, or a 4xx that says what was expected.

Everything here runs inside an inference slot (see app.py): decoding is where memory goes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus

import numpy as np
import simdjson
from PIL import Image, UnidentifiedImageError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

try:  # orjson writes the answers (numpy arrays included)
    import orjson as _json

    def dumps(value) -> bytes:
        return _json.dumps(value, option=_json.OPT_SERIALIZE_NUMPY)
except ImportError:  # pragma: no cover - the image always has orjson
    import json as _stdjson

    def dumps(value) -> bytes:
        return _stdjson.dumps(value, default=lambda o: o.tolist()).encode()

MAX_SIDE = 2048
MAX_BATCH = 64
IMAGE_TYPES = ("image/jpeg", "image/png", "application/octet-stream")
# Only these decoders ever see a body: every other Pillow plugin stays out of reach.
FORMATS = ("JPEG", "PNG")
# Named in the 4xx only; such bodies are refused without opening them.
_MAGIC = {b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
          b"RIFF": "WebP", b"\x00\x00\x01\x00": "ICO"}


class BadRequest(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def pixels_from_json(body: bytes) -> np.ndarray:
    """{"instances": [...]} or {"inputs": [...]} (MLflow's scoring protocol) as float32 pixels
    shaped (N, H, W, 3), or a 400 that says what was expected."""
    return check_pixels(array_from_json(body))


def array_from_json(body: bytes) -> np.ndarray:
    """The float32 array under "instances" or "inputs", of any rectangular shape, or a 400:
    for an array, accepted exactly when `np.asarray(json.loads(body)[key], np.float32)` works,
    and with the same values.

    simdjson parses the body in C++ and copies the numbers to one flat buffer, so a 128x128
    image costs no Python object per number (orjson + np.asarray made 49,152 of them). The
    array's structure is then checked against the shape of its first elements, so ragged
    arrays are still refused, and strings, booleans, nulls and objects among the numbers too.
    """
    try:
        # A parser per request, so its buffers go with it: up to 12 bytes per body byte
        # (a body of "0,0,0,..."), about 3.5 for pixels written as "217.0, ".
        document = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError) as exc:  # RuntimeError: too deep, integer over 64 bits
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body is not valid JSON ({exc})") from None
    if not isinstance(document, simdjson.Object):
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         'expected a JSON object {"instances": [...]} or {"inputs": [...]}')
    names = list(document)  # duplicates included: a repeated "instances" is refused too
    keys = [k for k in names if k in ("instances", "inputs")]
    if len(keys) != 1:
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         'expected exactly one of "instances" or "inputs" holding raw RGB '
                         f"pixels shaped (N, H, W, 3); got keys: {_listed(names)}")
    key = keys[0]
    return _numbers(document[key], key, body if len(names) == 1 else None)


# In JSON text outside strings, number literals and whitespace are made of these alone.
_NUMBER_BYTES = b"0123456789+-.eE"
_SPACE_BYTES = b" \t\n\r"
_KEYS_LISTED = 20
_MAX_DIMS = 64  # numpy's; np.asarray refused deeper arrays with a ValueError too


def _listed(names: list[str]) -> str:
    shown = sorted(names)[:_KEYS_LISTED]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return (", ".join(shown) or "none") + more


def _numbers(value, key: str, body: bytes | None) -> np.ndarray:
    """A rectangular array of numbers as float32, or a 400. `body` is the whole request when
    the value is its only member, for the fast structure check."""
    refused = BadRequest(HTTPStatus.BAD_REQUEST,
                         f'"{key}" must be a rectangular array of numbers shaped (N, H, W, 3)')
    if not isinstance(value, simdjson.Array):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            with np.errstate(over="ignore"):  # check_pixels names its shape: []
                return np.asarray(float(value)).astype(np.float32)
        raise refused
    try:
        # Numbers at any depth, in order, as float64 (integers converted); anything else
        # (a string, boolean, null or object) is a TypeError.
        flat = np.frombuffer(value.as_buffer(of_type="d"), dtype=np.float64)
    except TypeError:
        raise refused from None
    shape, first = [], value
    while isinstance(first, simdjson.Array):
        shape.append(len(first))
        if not shape[-1]:
            break
        first = first[0]
    if len(shape) > _MAX_DIMS or math.prod(shape) != flat.size \
            or not _rectangular(value, key, body, shape):
        raise refused
    # float64 -> float32 rounds as np.asarray(list of floats, dtype=float32) does; a number
    # beyond float32 becomes inf, which check_pixels refuses.
    with np.errstate(over="ignore"):
        return flat.astype(np.float32).reshape(shape)


def _rectangular(value, key: str, body: bytes | None, shape: list[int]) -> bool:
    """Whether `value` (arrays and numbers only, `math.prod(shape)` numbers) is exactly an
    array of `shape`: every sub-array's length, checked at once on bracket-and-comma skeletons.

    With the numbers deleted, an array shaped (2, 3) reads "[[,,],[,,]]", and any other
    arrangement of arrays and numbers reads differently, except that "[]" is an empty array
    or a single number: the count of numbers settles those. Fast path: the skeleton of the
    whole body (numbers and whitespace deleted) when the value is its only member and the key
    is written plainly; otherwise that of simdjson's minified text of the value (regenerated
    from the parse, about 2 ms more for a 128x128 image).
    """
    expected_length = _skeleton_length(shape)
    if body is not None:
        prefix = b'{"' + key.encode().translate(None, _NUMBER_BYTES) + b'":'
        text = body.translate(None, _NUMBER_BYTES + _SPACE_BYTES)
        if len(text) == len(prefix) + expected_length + 1 and text.startswith(prefix) \
                and text.endswith(b"}") and text[len(prefix):-1] == _skeleton(shape):
            return True
    text = value.mini.translate(None, _NUMBER_BYTES)
    return len(text) == expected_length and text == _skeleton(shape)


def _skeleton_length(shape: list[int]) -> int:
    length = 0
    for size in reversed(shape):
        length = 2 + max(size - 1, 0) + size * length
    return length


def _skeleton(shape: list[int]) -> bytes:
    skeleton = b""
    for size in reversed(shape):
        # Repetition, not b",".join: join holds a buffer view (80 bytes) per item.
        inner = (skeleton + b",") * (size - 1) + skeleton if size else b""
        skeleton = b"[" + inner + b"]"
    return skeleton


def check_pixels(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         f"expected raw RGB pixels shaped (N, H, W, 3), got shape "
                         f"{list(pixels.shape)} (wrap a single image in a list)")
    n, height, width, _ = pixels.shape
    if not 1 <= n <= MAX_BATCH:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"batch size must be 1 to {MAX_BATCH}, got {n}")
    if not (8 <= height <= MAX_SIDE and 8 <= width <= MAX_SIDE):
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         f"image sides must be 8 to {MAX_SIDE} pixels, got {height}x{width}")
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 255:
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         "pixel values must be raw RGB numbers in [0, 255] (not normalised)")
    return pixels


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def check_image_content_type(content_type: str) -> None:
    """Refuse the wrong kind of body before it is read."""
    if media_type(content_type) not in (*IMAGE_TYPES, "multipart/form-data"):
        kind = media_type(content_type)
        raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                         f"unsupported Content-Type {kind or '(none)'}: send image/jpeg, "
                         "image/png or multipart/form-data with a file field")


def image_bytes_from_request(content_type: str, body: bytes, max_parts: int,
                             max_part_header_bytes: int) -> bytes:
    check_image_content_type(content_type)
    if media_type(content_type) != "multipart/form-data":
        return body
    return _single_file_part(content_type, body, max_parts, max_part_header_bytes)


def _single_file_part(content_type: str, body: bytes, max_parts: int,
                      max_part_header_bytes: int) -> bytes:
    """The one file part of a multipart body (field "file" or "image", or any part with a
    filename); python-multipart does the parsing, with bounded parts and part headers."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         "multipart/form-data needs a boundary parameter in its Content-Type")
    state = {"parts": 0, "field": b"", "value": b"", "headers": {}, "ended": False}
    files: list[bytearray] = []
    current: list[bytearray | None] = [None]

    def on_part_begin():
        state["parts"] += 1
        state["headers"] = {}
        current[0] = None
        if state["parts"] > max_parts:
            raise BadRequest(HTTPStatus.BAD_REQUEST,
                             f"multipart body has more than {max_parts} parts; send one "
                             'file part named "file"')

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"] = state["value"] = b""

    def on_headers_finished():
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition"))
        if b"filename" in disposition or disposition.get(b"name") in (b"file", b"image"):
            if files:
                raise BadRequest(HTTPStatus.BAD_REQUEST,
                                 "multipart body has more than one file part; send exactly one")
            current[0] = bytearray()
            files.append(current[0])

    def on_part_data(data, start, end):
        if current[0] is not None:
            current[0] += data[start:end]

    def on_end():
        state["ended"] = True

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_end": on_end}, max_header_size=max_part_header_bytes)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"malformed multipart body ({exc})") from None
    if not files:
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         'multipart body has no file part; send the image as field "file"')
    if not state["ended"]:
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         "multipart body is incomplete (no closing boundary)")
    return bytes(files[0])


def image_pixel_count(data: bytes, max_pixels: int) -> int:
    """Width x height from the header alone; a 4xx for other formats and for bombs."""
    with _opened(data, max_pixels) as image:
        return image.size[0] * image.size[1]


def pixels_from_image(data: bytes, max_pixels: int) -> np.ndarray:
    with _opened(data, max_pixels) as image:
        image.load()
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        pixels = np.asarray(rgb)
    # uint8 until the interpreter's input tensor: a quarter of the memory of float32.
    return check_pixels(pixels[None])


@contextmanager
def _opened(data: bytes, max_pixels: int) -> Iterator[Image.Image]:
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            # Only the header has been read so far: refuse a bomb before decoding it.
            width, height = image.size
            if width * height > max_pixels or max(width, height) > MAX_SIDE:
                raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                 f"image is {width}x{height} = {width * height} pixels; up to "
                                 f"{max_pixels} pixels (RICE_SERVING_MAX_PIXELS) and sides up "
                                 f"to {MAX_SIDE} are accepted")
            yield image
    except Image.DecompressionBombError:  # declared far beyond Pillow's own cap
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"image declares more pixels than the {max_pixels} accepted "
                         "(RICE_SERVING_MAX_PIXELS)") from None
    except UnidentifiedImageError:
        found = next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)
        detail = f", got {found}" if found else ""
        raise BadRequest(HTTPStatus.BAD_REQUEST,
                         f"body is not a readable JPEG or PNG image (expected a JPEG or PNG "
                         f"image{detail})") from None
    except (OSError, SyntaxError, ValueError):
        # Pillow reports truncated and corrupt streams as OSError (SyntaxError for some PNGs).
        raise BadRequest(HTTPStatus.BAD_REQUEST, "body is not a readable JPEG or PNG image "
                         "(truncated or corrupt)") from None
