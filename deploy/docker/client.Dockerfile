# fedser client daemon: non-root, one data volume, CPU torch by default.
#
#   docker build -f deploy/docker/client.Dockerfile -t fedser-client:0.1.0 .     (from the repository root)
#
# CUDA variant: the same file with PyTorch's CUDA wheels, which carry the CUDA runtime
# themselves, so the slim base stays; the host needs the NVIDIA driver and container toolkit:
#   docker build -f deploy/docker/client.Dockerfile -t fedser-client:0.1.0-cuda \
#       --build-arg PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cu128" .
#   docker run --gpus all ... fedser-client:0.1.0-cuda join ... --device cuda
# Offline build: wheels in deploy/docker/wheels/ and --build-arg PIP_ARGS=--no-index (docs/deploy.md).
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
LABEL org.opencontainers.image.title="fedser-client" \
      org.opencontainers.image.description="fedser client daemon: trains on private audio, sends only model updates" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 fedser \
 && useradd --system --uid 10001 --gid fedser --home-dir /home/fedser --create-home --shell /usr/sbin/nologin fedser \
 && mkdir -p /data /etc/fedser/tls && chown fedser:fedser /data
COPY --from=build /opt/fedser /opt/fedser
COPY deploy/docker/client-entrypoint.sh /usr/local/bin/fedser-client-entrypoint
ENV PATH=/opt/fedser/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=536870912
USER 10001:10001
WORKDIR /home/fedser
# audio + labels.csv; the client also keeps its feature cache and local state in /data/.fedser
VOLUME ["/data"]
# a client serves nothing: its health is its process, which exits non-zero when it gives up
HEALTHCHECK NONE
ENTRYPOINT ["fedser-client-entrypoint"]
CMD ["join", "--server", "server:7443", "--data-dir", "/data", "--ca-cert", "/etc/fedser/tls/ca.pem"]
