"""Dataset discovery, validation, fingerprinting, synthetic data and the tf.data input."""

from rice_mlops.compute.data.validate import DataValidationError, Problem, validate
from rice_mlops.core.dataset_layout import SPLITS, Dataset, discover, split_of

__all__ = [
    "SPLITS",
    "Dataset",
    "DataValidationError",
    "Problem",
    "discover",
    "split_of",
    "validate",
]
