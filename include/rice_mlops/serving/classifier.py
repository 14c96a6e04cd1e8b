"""A TFLite rice classifier behind a pool of interpreters (one per concurrent request)."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rice_mlops.serving.inference import TFLiteModel

# Inputs up to this many float32 values (a batch of 8 rice images, or one 1024x1024 image)
# keep their interpreter; larger ones get a fresh one afterwards.
_KEEP_INPUT_VALUES = 1024 * 1024 * 3


@dataclass
class Classifier:
    """Probabilities for raw RGB pixels (N, H, W, 3), float32 or uint8, any H and W."""

    model_dir: Path
    workers: int = 2
    classes: list[str] = field(init=False)
    metadata: dict = field(init=False)

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        self.classes = json.loads((self.model_dir / "labels.json").read_text())["classes"]
        metadata_file = self.model_dir / "metadata.json"
        self.metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        self._slots: queue.Queue[TFLiteModel] = queue.Queue()
        self._model_path = str(self.model_dir / "model.tflite")
        for _ in range(max(1, self.workers)):
            self._slots.put(self._new_slot())
        # Warm one shape so the first request does not pay for allocation.
        self.predict(np.zeros((1, 250, 250, 3), dtype=np.float32))

    def _new_slot(self) -> TFLiteModel:
        return TFLiteModel(self._model_path)

    @contextmanager
    def _slot(self) -> Iterator[TFLiteModel]:
        slot = self._slots.get()
        try:
            yield slot
        finally:
            if slot.shape is not None and np.prod(slot.shape) > _KEEP_INPUT_VALUES:
                # An interpreter's arena never shrinks: after one 2048x2048 image it would hold
                # 48 MB for good. A fresh one costs about a millisecond.
                slot = self._new_slot()
            self._slots.put(slot)

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self._slot() as model:
            return model.probabilities(images)
