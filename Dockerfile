# syntax=docker/dockerfile:1
# signalwire-exporter image: build the wheel in one stage, install it into a virtualenv in a
# second, and copy only that virtualenv into a slim runtime image that runs as a non-root user.
#
#   docker build -t signalwire-exporter .
#   docker run -p 9880:9880 -v "$PWD/config.yaml:/etc/signalwire-exporter/config.yaml:ro" \
#     -e SIGNALWIRE_SIGNING_KEY signalwire-exporter

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# The wheel is built once here; the runtime stage never sees the source tree or build tools.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/signalwire-exporter \
 && /opt/signalwire-exporter/bin/pip install /wheels/*.whl

FROM ${PYTHON_IMAGE}
ARG UID=10001
RUN useradd --system --uid "${UID}" --user-group --no-create-home --shell /usr/sbin/nologin exporter
COPY --from=build /opt/signalwire-exporter /opt/signalwire-exporter
# The example config runs on the defaults; mount your own file over it (read-only is fine).
COPY config.example.yaml /etc/signalwire-exporter/config.yaml
# MALLOC_MMAP_THRESHOLD_: a fixed glibc mmap threshold lets the call tracker's large dict
# resizes go back to the OS; at the tracker's cap it measured 170 instead of 275 bytes per
# tracked call (bench/README.md, memory phase).
ENV PATH=/opt/signalwire-exporter/bin:$PATH \
    MALLOC_MMAP_THRESHOLD_=131072 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIGNALWIRE_EXPORTER_CONFIG=/etc/signalwire-exporter/config.yaml
USER ${UID}
EXPOSE 9880
# Slim images have no curl; the interpreter is already there. With web.tls_cert_file set, or
# another listen port, set SIGNALWIRE_EXPORTER_HEALTHCHECK_URL (e.g. https://127.0.0.1:9880/healthz);
# the certificate is not verified: this only asks the process on this host whether it serves.
ENV SIGNALWIRE_EXPORTER_HEALTHCHECK_URL=http://127.0.0.1:9880/healthz
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['SIGNALWIRE_EXPORTER_HEALTHCHECK_URL'], timeout=4, context=ssl._create_unverified_context())"]
# Exec form: the exporter is PID 1 and gets SIGTERM directly, so `docker stop` drains
# in-flight callbacks and exits 0 instead of being killed after the grace period.
ENTRYPOINT ["signalwire-exporter"]
