"""The one way this project runs a TFLite rice classifier: raw RGB pixels in, probabilities out.

The server answers requests with it, the gate compares challenger and champion with it, the
release zone re-measures the shipped bytes with it and the export check compares it with
Keras; resizing and scaling are inside the model, so every caller hands it raw pixels and all
of them see the numbers the server will give. It lives in the serving package because that
package ships alone in the image; the pipeline imports it from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

# One image's pixels, at most: the dataset check's bound (a 4096x4096 grain photo is already
# 16 times the dataset's own). The server refuses far less in its decoder (RICE_MAX_PIXELS).
MAX_PIXELS = 4096 * 4096


class TooManyPixels(ValueError):
    """An image larger than MAX_PIXELS: refused before it is decoded or run."""


def check_size(width: int, height: int, where: object) -> None:
    if width * height > MAX_PIXELS:
        raise TooManyPixels(f"{where} has {width}x{height} pixels, more than the {MAX_PIXELS} "
                            "an image may have")


class TFLiteModel:
    """One LiteRT interpreter on one TFLite file, single-threaded (callers that serve many
    requests keep a pool of these). The input is resized to each new shape it is given."""

    def __init__(self, path: Path | str):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]
        self.shape: tuple[int, ...] | None = None

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for pixels shaped (N, H, W, 3), float32 or uint8, any H and W."""
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"pixels shaped (N, H, W, 3) expected, not {pixels.shape}")
        check_size(pixels.shape[2], pixels.shape[1], f"an input shaped {pixels.shape}")
        if pixels.shape != self.shape:
            self.interpreter.resize_tensor_input(self._input, pixels.shape, strict=False)
            self.interpreter.allocate_tensors()
            self.shape = pixels.shape
        # Written through a view of the input tensor, so uint8 pixels are converted while
        # copied: no float32 copy of a large image besides the interpreter's own.
        self.interpreter.tensor(self._input)()[...] = pixels
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()


def image_pixels(path: Path) -> np.ndarray:
    """One image file as float32 RGB pixels shaped (1, H, W, 3), its size checked before it is
    decoded (no decompression bomb)."""
    from PIL import Image

    with Image.open(path) as image:
        check_size(image.width, image.height, path)
        return np.asarray(image.convert("RGB"), dtype=np.float32)[None]


def file_outputs(model_path: Path, images: Sequence[Path]) -> tuple[list[np.ndarray], list[dict]]:
    """The probabilities the TFLite file gives each image file, and each image's input
    statistics as the server logs them (for drift references built from the same bytes)."""
    from rice_mlops.serving.prediction_log import input_statistics

    model = TFLiteModel(model_path)
    probabilities, statistics = [], []
    for path in images:
        pixels = image_pixels(path)
        probabilities.append(model.probabilities(pixels)[0])
        statistics.extend(input_statistics(pixels))
    return probabilities, statistics
