"""Training settings with their defaults, shared by the CLI and the DAG."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from rice_mlops.core.vocabulary import MODEL_NAME

# Here rather than in model.py, so the CLI and the DAG name them without importing Keras.
ARCHITECTURES = ("rice_cnn", "seed_cnn", "patch_cnn", "patch_se")
DEFAULT_ARCHITECTURE = "rice_cnn"


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path
    epochs: int = 25
    image_size: int = 64
    batch_size: int = 64
    learning_rate: float = 0.005
    seed: int = 42
    architecture: str = DEFAULT_ARCHITECTURE
    augment: bool = True
    min_per_class: int = 5
    experiment: str = MODEL_NAME
    # Where the run came from: webhook conf or Airflow context; logged as tags.
    source: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "epochs": (self.epochs, 1, 1000),
            "image_size": (self.image_size, 16, 512),
            "batch_size": (self.batch_size, 1, 4096),
        }
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")

    def model_params(self) -> dict[str, str | int | float | bool]:
        """What decides the trained weights besides data and code (the code digest's part)."""
        return {"epochs": self.epochs, "image_size": self.image_size,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "seed": self.seed, "architecture": self.architecture, "augment": self.augment}

    def params(self) -> dict[str, str | int | float | bool]:
        values = asdict(self)
        values.pop("source")
        values["data_dir"] = str(self.data_dir)
        return values
