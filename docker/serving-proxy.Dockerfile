# The serving proxy (rice_mlops.release.rollout): Debian's nginx, nothing else. The release zone mounts
# the configuration it renders at /etc/rice-serving-proxy and runs nginx as nobody with a
# read-only root; nothing in this image knows a port or a model.
#   scripts/docker-engine start builds it as rice-serving-proxy:local (no build context).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# policy-rc.d: the package's scripts must not start nginx inside the build (host network).
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc/* /usr/share/man/* \
      /usr/sbin/policy-rc.d
USER 65534:65534
CMD ["nginx", "-g", "daemon off;"]
