"""The compute zone (the default Celery queue): data checks, training, export, evaluation and
the quality gate. It holds the MLflow login that writes training runs; it never builds, signs
or serves, and imports nothing of the release zone (an import contract).
"""
