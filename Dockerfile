# One image for both Relay roles. The default CMD runs the API; compose and Kubernetes override the
# command with `arq worker.settings` for workers. No HEALTHCHECK here on purpose: the right check differs
# per role, so compose and the Kubernetes probes define it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: resolve and install dependencies into a self-contained virtualenv -------------------------
FROM ${PYTHON_IMAGE} AS builder

# No PYTHONDONTWRITEBYTECODE here: pip byte-compiles what it installs, so the read-only runtime image
# ships .pyc files instead of recompiling every module on each start.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src
# README* matches nothing if the file is absent; BuildKit accepts an empty wildcard match.
COPY pyproject.toml README* ./
COPY api/ api/
COPY worker/ worker/
COPY shared/ shared/
COPY relay/ relay/
# A non-editable install: the runtime stage needs only /opt/venv, never /src.
RUN pip install --no-cache-dir .

# --- runtime: the venv on a clean slim base, no compilers, no sources, no pip cache --------------------
FROM ${PYTHON_IMAGE} AS runtime

# HOME=/tmp: the user has no home directory and the root filesystem is read-only in Kubernetes; /tmp is
# the one writable mount (an emptyDir there, a tmpfs in compose).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp

# A fixed numeric UID/GID so Kubernetes `runAsNonRoot` can verify it without resolving names.
RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin relay

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Exec form: the process is PID 1 and gets SIGTERM directly. Sanic and arq both install SIGTERM handlers
# (the API drains, the worker lets running jobs finish), and --single-process spawns no children to reap.
STOPSIGNAL SIGTERM
CMD ["sanic", "api.app:create_app", "--factory", "--single-process", "--host", "0.0.0.0", "--port", "8000"]
