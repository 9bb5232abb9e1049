# fedser coordinator: CPU torch, non-root, gRPC health check.
#
#   docker build -f deploy/docker/server.Dockerfile -t fedser-server:0.1.0 .     (from the repository root)
#
# Build arguments:
#   PYTHON_IMAGE  base image with Python 3.11+ and venv (default python:3.11-slim-bookworm)
#   PIP_ARGS      where pip finds packages; the default adds PyTorch's CPU index so that
#                 torch==2.13.0 resolves to the CPU build. For an offline build, put wheels in
#                 deploy/docker/wheels/ and pass --build-arg PIP_ARGS=--no-index (docs/deploy.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY deploy/docker/wheels/ /wheels/
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY fedser_server/ fedser_server/
COPY fedser_client/ fedser_client/
COPY fedser_sim/ fedser_sim/
# PIP_ARGS is a list of options: split on purpose
# hadolint ignore=SC2086
RUN python3 -m venv /opt/fedser \
 && /opt/fedser/bin/pip install --no-cache-dir ${PIP_ARGS} --find-links /wheels "torch==2.13.0" /src \
 && find /opt/fedser -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="fedser-server" \
      org.opencontainers.image.description="fedser coordinator: federated speech-emotion recognition over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 fedser \
 && useradd --system --uid 10001 --gid fedser --home-dir /var/lib/fedser --create-home --shell /usr/sbin/nologin fedser \
 && mkdir -p /etc/fedser/tls
COPY --from=build /opt/fedser /opt/fedser
# MALLOC_*: reuse large transfer buffers instead of page-faulting them per chunk (DESIGN §8)
ENV PATH=/opt/fedser/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=536870912 \
    FEDSER_PROBE_ADDRESS=127.0.0.1:7443 \
    FEDSER_PROBE_CA_CERT=/etc/fedser/tls/ca.pem \
    FEDSER_PROBE_SERVER_NAME=localhost
USER 10001:10001
WORKDIR /var/lib/fedser
VOLUME ["/var/lib/fedser"]
# 7443 gRPC (TLS), 9100 Prometheus metrics
EXPOSE 7443 9100
# the probe reads its address and certificates from FEDSER_PROBE_* (set above, override per deployment)
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["python3", "-m", "fedser_server.probe"]
ENTRYPOINT ["fedser-server"]
CMD ["serve", "--address", "0.0.0.0:7443", "--state-dir", "/var/lib/fedser", \
     "--tls-cert", "/etc/fedser/tls/server.pem", "--tls-key", "/etc/fedser/tls/server.key", "--metrics-port", "9100"]
