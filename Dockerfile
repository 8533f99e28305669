# syntax=docker/dockerfile:1
#
# One image for every nudgestream process: the command picks the role.
#   docker run IMAGE worker            stream-processing worker (default)
#   docker run IMAGE topics create     create all topics, then exit
#   docker run IMAGE produce --rate N  load generator
#   docker run IMAGE notify            reference notification worker
#
# There is no HEALTHCHECK here because the four roles answer on different ports (or not
# at all); docker-compose.yml and the Kubernetes manifests declare the probe of the role
# they run.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package build reads: .dockerignore keeps everything else out of the context.
COPY pyproject.toml README.md ./
COPY models ./models
COPY streams ./streams
COPY load ./load
# A virtualenv is copied whole into the runtime stage, without the build's pip cache.
# The rocksdb extra brings rocksdict, the table store used in production.
RUN python -m venv /opt/nudgestream \
 && /opt/nudgestream/bin/pip install ".[rocksdb]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/nudgestream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUDGESTREAM_WEB_HOST=0.0.0.0 \
    NUDGESTREAM_DATA_DIR=/var/lib/nudgestream
# A fixed numeric uid lets Kubernetes check runAsNonRoot and lets fsGroup own the volume.
RUN groupadd --system --gid 10001 nudgestream \
 && useradd --system --uid 10001 --gid nudgestream --no-create-home \
      --home-dir /var/lib/nudgestream nudgestream \
 && install -d -o nudgestream -g nudgestream -m 0750 /var/lib/nudgestream
COPY --from=build /opt/nudgestream /opt/nudgestream
USER 10001:10001
WORKDIR /var/lib/nudgestream
# 6066: worker /metrics, /healthz, /readyz; 6067: metrics of the notification worker.
EXPOSE 6066 6067
ENTRYPOINT ["nudgestream"]
CMD ["worker"]
