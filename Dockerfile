# syntax=docker/dockerfile:1
#
# Ergon images. Targets:
#   operator    the operator (ergon-operator); the chart's `image`
#   worker      the base image for worker pods (the `ergon` CLI); users extend it:
#                 FROM ghcr.io/ergon-dev/ergon:<version>-worker
#                 COPY my_flows/ /app/my_flows/
#   worker-dev  worker + this repository's examples/, for kind and the end-to-end suite
#
#   docker build --target operator -t ergon:dev .
#   docker build --target worker -t ergon:dev-worker-base .
#   docker build --target worker-dev -t ergon:dev-worker .
#
# The final images hold a virtualenv and the Python runtime only: no compilers, no pip cache,
# and they run as uid 10001.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: one wheel of the project, then one virtualenv per image ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runtime/ runtime/
COPY operator/ operator/
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM build AS build-operator
RUN python -m venv /opt/ergon/venv \
 && /opt/ergon/venv/bin/pip install "$(ls /wheels/ergon-*.whl)[operator]"

FROM build AS build-worker
RUN python -m venv /opt/ergon/venv \
 && /opt/ergon/venv/bin/pip install "$(ls /wheels/ergon-*.whl)[postgres]"

# ---- runtime base: the slim Python image plus an unprivileged user ----
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/ergon/venv/bin:$PATH
RUN groupadd --system --gid 10001 ergon \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/ergon --create-home \
      --shell /usr/sbin/nologin ergon
WORKDIR /app

FROM base AS operator
COPY --from=build-operator /opt/ergon/venv /opt/ergon/venv
USER 10001:10001
# Health endpoint (ERGON_HEALTH_PORT).
EXPOSE 8080
ENTRYPOINT ["ergon-operator"]

FROM base AS worker
COPY --from=build-worker /opt/ergon/venv /opt/ergon/venv
# Flow modules copied under /app are importable (spec.flow: "my_flows.orders:OrderFlow").
ENV PYTHONPATH=/app
USER 10001:10001
ENTRYPOINT ["ergon"]
CMD ["--help"]

FROM worker AS worker-dev
COPY examples/ /app/examples/
