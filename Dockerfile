# dockwise: the bot's own image.
#
#   docker build -t dockwise .
#   docker run --rm dockwise ask "why FROM ubuntu?"
#   docker run --rm -p 3000:3000 --env-file deploy/.env dockwise        # the bot (serve)
#
# Two stages. "build" turns the project and every dependency into wheels and installs them
# into a fresh virtualenv (the articles and the embedding model are package data) and fits
# the question router once into the cache; the final stage starts again from the bare base
# and copies only that virtualenv and that cache: no compiler, no pip, no wheels, no sources.
#
# BASE_IMAGE picks the Python base. The default is the official slim image; any Debian-like
# image with `python3` (and its venv module) works, e.g. Debian's own python3 + python3-venv.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build

# Where pip finds packages, for this stage only (a mirror, a local wheelhouse). Build
# arguments of this stage never reach the final image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
ARG PIP_TRUSTED_HOST

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY knowledge ./knowledge

# 1. wheels of the project and all its dependencies; 2. a pip-less runtime venv holding
# exactly those wheels (installed with the build venv's pip, offline, from /wheels);
# 3. the fitted router in the cache, so the image answers at once, even read-only.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels . \
    && python3 -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir \
        --no-index --find-links /wheels dockwise \
    && install -d -m 0750 /out/cache \
    && DOCKWISE_CACHE_DIR=/out/cache /opt/venv/bin/dockwise ask "why FROM ubuntu?" > /dev/null \
    && chmod -R u+rwX,g+rX,o= /out/cache

FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/dockwise/dockwise
LABEL org.opencontainers.image.title="dockwise" \
      org.opencontainers.image.description="A Slack and Discord teammate that unblocks people learning containers" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DOCKWISE_HOST=0.0.0.0 \
    DOCKWISE_PORT=3000 \
    DOCKWISE_CACHE_DIR=/var/cache/dockwise \
    HOME=/var/cache/dockwise

# No RUN in this stage: the image is the base plus two copies, so nothing in the base is
# rewritten (zero wasted bytes) and no shell is needed here. The program and its articles
# stay root-owned and read-only; the fixed, unprivileged uid 10001 (Kubernetes'
# runAsNonRoot checks the number) owns only the cache directory. It needs no passwd entry.
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /out/cache /var/cache/dockwise

USER 10001:10001
WORKDIR /opt/dockwise
EXPOSE 3000

# curl is not in slim images: ask the bot's own /healthz with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DOCKWISE_PORT', '3000'), timeout=4)"]

ENTRYPOINT ["dockwise"]
CMD ["serve"]
