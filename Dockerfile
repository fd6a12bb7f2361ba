# The dispatcher's image: the producer library, the Celery workers, Flower and the
# metrics exporter (`convdispatch`). docker-compose.yml builds it; `docker build .` works
# alone too. The configuration and the secrets are not in it: they come at run time
# (a mounted config/dispatcher.toml and environment variables), and .dockerignore keeps
# .env, config/env/*.env and config/dispatcher.toml out of the build context.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what the wheel is built from (pyproject.toml's packages, config/ and the readme).
COPY pyproject.toml README.md ./
COPY config ./config
COPY dispatcher ./dispatcher
COPY workers ./workers
COPY sandboxes ./sandboxes
RUN pip install . && rm -rf /root/.cache

USER nobody
CMD ["convdispatch", "--help"]
