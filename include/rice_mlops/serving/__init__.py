"""The HTTP server inside the serving image.

Self-contained on purpose: it imports only the standard library, numpy, Pillow, ai-edge-litert
and (when present) orjson, so the image carries neither TensorFlow nor MLflow.
"""
