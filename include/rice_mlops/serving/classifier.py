"""A TFLite rice classifier behind a pool of interpreters (one per concurrent request)."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class _Slot:
    interpreter: object
    input_index: int
    output_index: int
    shape: tuple[int, ...] | None = None


@dataclass
class Classifier:
    """Probabilities for raw RGB float32 pixels (N, H, W, 3), any H and W."""

    model_dir: Path
    workers: int = 2
    classes: list[str] = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.model_dir = Path(self.model_dir)
        self.classes = json.loads((self.model_dir / "labels.json").read_text())["classes"]
        metadata_file = self.model_dir / "metadata.json"
        self.metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        self._slots: queue.Queue[_Slot] = queue.Queue()
        model_path = str(self.model_dir / "model.tflite")
        for _ in range(max(1, self.workers)):
            interpreter = Interpreter(model_path=model_path, num_threads=1)
            self._slots.put(_Slot(interpreter, interpreter.get_input_details()[0]["index"],
                                  interpreter.get_output_details()[0]["index"]))
        # Warm one shape so the first request does not pay for allocation.
        self.predict(np.zeros((1, 250, 250, 3), dtype=np.float32))

    @contextmanager
    def _slot(self) -> Iterator[_Slot]:
        slot = self._slots.get()
        try:
            yield slot
        finally:
            self._slots.put(slot)

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self._slot() as slot:
            if images.shape != slot.shape:
                slot.interpreter.resize_tensor_input(slot.input_index, images.shape, strict=False)
                slot.interpreter.allocate_tensors()
                slot.shape = images.shape
            slot.interpreter.set_tensor(slot.input_index, images)
            slot.interpreter.invoke()
            return slot.interpreter.get_tensor(slot.output_index).copy()
