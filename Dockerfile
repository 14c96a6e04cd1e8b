# The serving image: the TFLite rice classifier behind a small HTTP server that speaks MLflow's
# scoring protocol. Built from a context prepared by `rice_mlops.release.image.prepare_context`
# (wheels/, app/, model/), with no network: every dependency is a vendored wheel.
ARG BASE_IMAGE=python:3.11-slim
# The build stage's image: the base plus Debian's binutils (scripts/docker-engine builds it as
# rice-base/build), whose `strip` drops the shared objects' symbol tables (about 19 MB). Not
# the libraries auditwheel vendored into `*.libs/`: patchelf rewrote their headers, and a
# stripped OpenBLAS no longer loads. On a base without strip the build goes on, unstripped.
ARG BUILD_IMAGE=${BASE_IMAGE}
# Debian packages the server never runs, purged from the runtime's root (with dpkg, so its
# database and the SBOM, which leaves them out too, say what is there): the release zone passes
# rice_mlops.release.image.RUNTIME_PURGED.
ARG RUNTIME_PURGED=""

FROM ${BUILD_IMAGE} AS deps
COPY wheels/ /wheels/
# pip runs from its own vendored wheel, so the base needs no pip (nor does the image: neither
# pip, setuptools nor wheel is installed); --target keeps the result in one directory that the
# final stage copies; --no-deps: requirements.txt lists everything the server loads, and
# nothing the Interpreter never imports (ai-edge-litert's protobuf, ml_dtypes, flatbuffers and
# tqdm: about 7 MB). Pruned, because the server never loads them (about 27 MB):
# - ai-edge-litert: the WebGPU accelerator, AOT compiler, vendor plugins, tools and
#   libLiteRt.so (the CompiledModel runtime, loaded only if present; the Interpreter runs
#   without it);
# - numpy: tests and test-only extension modules, f2py, distutils, C headers, static libraries;
# - Pillow: AVIF, WebP, font (FreeType, HarfBuzz, Brotli, libpng) and Tk modules and their
#   libraries (decoding goes through JPEG and PNG alone: rice_mlops.serving.decode.FORMATS);
# - pysimdjson's C++ and Cython sources; type stubs (.pyi) and Cython declarations (.pxd).
# The check after it imports what the server imports and decodes a JPEG and a PNG.
RUN python3 "$(ls /wheels/pip-*.whl)/pip" install --no-index --find-links /wheels \
        --target /opt/rice/site-packages --no-compile --disable-pip-version-check --no-deps \
        -r /wheels/requirements.txt \
 && cd /opt/rice/site-packages \
 && rm -rf bin ai_edge_litert/libLiteRtWebGpuAccelerator.so ai_edge_litert/aot \
        ai_edge_litert/vendors ai_edge_litert/tools ai_edge_litert/libLiteRt.so \
        numpy/tests numpy/*/tests numpy/_core/_simd.* numpy/_core/_*_tests.* numpy/f2py \
        numpy/_pyinstaller numpy/distutils numpy/_core/include numpy/_core/lib \
        numpy/random/lib numpy/random/_examples \
        PIL/tests PIL/_avif.* PIL/_webp.* PIL/_imagingft.* PIL/_imagingtk.* \
        pillow.libs/libavif-* pillow.libs/libwebp* pillow.libs/libsharpyuv-* \
        pillow.libs/libfreetype-* pillow.libs/libharfbuzz-* pillow.libs/libbrotli* \
        pillow.libs/libpng16-* \
        simdjson/*.cpp simdjson/*.h simdjson/*.pyx simdjson/*.pxd \
 && find . \( -name '*.pyi' -o -name '*.pxd' \) -delete \
 && if command -v strip >/dev/null; then \
        find . -name '*.so*' -type f -not -path '*.libs/*' -exec strip --strip-unneeded {} + ; \
    else echo "no strip in the build image: shared objects keep their symbols" >&2; fi \
 && PYTHONPATH=/opt/rice/site-packages python3 -c "$(printf '%s\n' \
        'from ai_edge_litert.interpreter import Interpreter' \
        'import numpy, orjson, simdjson, uvicorn, httptools, python_multipart, prometheus_client' \
        'from cryptography.hazmat.primitives.asymmetric import ed25519' \
        'from io import BytesIO' \
        'from PIL import Image' \
        'for kind in ("JPEG", "PNG"):' \
        '    data = BytesIO()' \
        '    Image.new("RGB", (8, 8)).save(data, kind)' \
        '    Image.open(data, formats=[kind]).convert("RGB").load()')" \
 && python3 -m compileall -q -j 0 /opt/rice/site-packages

# The runtime's root: the base less what a Python server never runs. Removing files in a later
# layer would not make the image smaller, so the trimmed root is copied into an empty image.
# Purged: RUNTIME_PURGED (perl, apt, debconf); removed from packages that stay: glibc's iconv
# modules (Python has its own codecs) and pydoc's topic texts (about 23 MB in all).
FROM ${BASE_IMAGE} AS root
ARG RUNTIME_PURGED
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rice \
 && if [ -n "$RUNTIME_PURGED" ]; then \
        dpkg --purge --force-remove-essential --force-depends $RUNTIME_PURGED >/dev/null; fi \
 && rm -rf /usr/lib/x86_64-linux-gnu/gconv /usr/lib/aarch64-linux-gnu/gconv \
        /usr/lib/python3.11/pydoc_data /var/cache/debconf /var/log/* \
 && python3 -c "import ssl, ctypes, hashlib, zlib, lzma, bz2, json, encodings.idna"

FROM scratch
# What no run changes comes first, so every build after the first takes these layers from the
# cache and every push after the first finds them in the registry (the ~150 MB of the root and
# packages is neither copied nor sent again); the run's arguments, label, model and evidence
# come last.
COPY --from=root / /
COPY --from=deps /opt/rice/site-packages /opt/rice/site-packages
COPY app/ /opt/rice/app/
RUN python3 -m compileall -q /opt/rice/app
# MALLOC_MMAP_THRESHOLD_: buffers over 1 MiB (a decoded large image, an interpreter's input)
# get their own mapping, returned to the system when freed; with glibc's default the threads'
# heaps kept them, and 32 concurrent 2048x2048 PNGs peaked at 222 MiB instead of 140 MiB.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONPATH=/opt/rice/site-packages:/opt/rice/app \
    MALLOC_MMAP_THRESHOLD_=1048576 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RICE_MODEL_DIR=/opt/model \
    RICE_MODEL_PUBLIC_KEY=/opt/rice/evidence/model-signing.pub \
    RICE_HOST=0.0.0.0 \
    RICE_PORT=8080
ARG SOURCE_COMMIT=unknown
ARG MLFLOW_RUN_ID=unknown
ARG MODEL_VERSION=unknown
ARG MODEL_NAME=rice-classifier
LABEL org.opencontainers.image.title="rice-classifier" \
      org.opencontainers.image.description="TFLite rice-variety classifier (MLflow scoring protocol)" \
      org.opencontainers.image.revision="${SOURCE_COMMIT}" \
      org.opencontainers.image.version="${MODEL_VERSION}" \
      io.rice-mlops.mlflow.run-id="${MLFLOW_RUN_ID}" \
      io.rice-mlops.model.name="${MODEL_NAME}" \
      io.rice-mlops.model.version="${MODEL_VERSION}"
COPY model/ /opt/model/
# The SBOM and the public key the server checks model/model.sig.json with (before serving).
COPY evidence/ /opt/rice/evidence/
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['RICE_PORT'] + '/ping', timeout=2)"]
ENTRYPOINT ["python3", "-m", "rice_mlops.serving"]
