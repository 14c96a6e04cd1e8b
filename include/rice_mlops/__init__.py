"""rice-mlops: retrain, track, version, package and ship a rice-variety image classifier."""

__version__ = "0.1.0"
