"""A stream of real predictions for the monitoring tests (embedded and compose stacks): images
of a split sent to a serving endpoint as they are or in other light, and what was sent, so a
test can say which class each image the labelling queue kept really is."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import httpx
from PIL import Image, ImageEnhance


def send_stream(url: str, paths: list[Path], count: int,
                brightness: float | None = None) -> dict[str, Path]:
    """`count` images spread over the sorted `paths` (so over every class), as they are or in
    `brightness` times the light, each answered 200 by `url`/predict: {sha256 of the body
    sent: the image it was made from}."""
    sent = {}
    with httpx.Client(timeout=30) as client:
        for i in range(count):
            path = paths[i * len(paths) // count]
            body = path.read_bytes()
            if brightness is not None:
                with Image.open(path) as image:
                    rgb = ImageEnhance.Brightness(image.convert("RGB")).enhance(brightness)
                encoded = io.BytesIO()
                rgb.save(encoded, "JPEG", quality=95)
                body = encoded.getvalue()
            answer = client.post(f"{url}/predict", content=body,
                                 headers={"Content-Type": "image/jpeg"})
            assert answer.status_code == 200, answer.text
            sent[hashlib.sha256(body).hexdigest()] = path
    return sent
