"""Dataset discovery, validation, fingerprinting, synthetic data and the tf.data input."""

from rice_mlops.data.layout import SPLITS, Dataset, discover, split_of
from rice_mlops.data.validate import DataValidationError, Problem, validate

__all__ = [
    "SPLITS",
    "Dataset",
    "DataValidationError",
    "Problem",
    "discover",
    "split_of",
    "validate",
]
