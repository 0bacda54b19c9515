# Images of the service: `api` (FastAPI, no torch) and `worker` (Celery, torch).
#
#   docker build --target api -t fragility-api .
#   docker build --target worker -t fragility-worker .
#
# docker-compose.yml builds both and adds Redis.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FRAGILITY_STORAGE_DIR=/data/storage
WORKDIR /srv/fragility
RUN useradd --create-home --uid 10001 fragility \
    && mkdir -p /data/storage \
    && chown fragility:fragility /data/storage
COPY pyproject.toml README.md ./
COPY app ./app
COPY fragility ./fragility
COPY models ./models
COPY worker ./worker

# The API validates requests and uploads and enqueues jobs; it never imports torch, so its
# image installs the service extra only.
FROM base AS api
RUN pip install ".[service]"
USER fragility
EXPOSE 8000
ENV FRAGILITY_API_HOST=0.0.0.0 \
    FRAGILITY_API_PORT=8000
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["fragility", "serve"]

# Workers run the analyses. torch is pinned and installed first, from PyPI; on Linux x86-64 that
# wheel includes CUDA, so the same image serves CPU and GPU workers.
FROM base AS worker
RUN pip install torch==2.14.1 torchvision==0.29.1 \
    && pip install ".[engine,service]"
USER fragility
CMD ["fragility", "worker"]
