"""The HTTP server inside the serving image.

Self-contained on purpose: uvicorn (httptools), python-multipart, prometheus-client, numpy,
Pillow, ai-edge-litert, pysimdjson (requests) and orjson (answers), so the image carries
neither TensorFlow nor MLflow.
"""
