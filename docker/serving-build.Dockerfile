# The serving image's build stage (Dockerfile, ARG BUILD_IMAGE): the base plus Debian's
# binutils, whose `strip` drops the vendored shared objects' symbol tables. It builds the image
# and is never shipped.
#   scripts/docker-engine start builds it as rice-base/build:bookworm (no build context).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/*
