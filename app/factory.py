"""Build the FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from app.errors import install_error_handlers
from app.limits import BodyLimit, BodyLimitMiddleware
from app.metrics import JobCollector, RequestMetrics
from app.routes import audits, batches, health, job_types, jobs, models
from app.services import build_services
from fragility import __version__
from fragility.settings import Settings, get_settings
from worker.store.redis_client import TRANSIENT_REDIS_ERRORS

logger = logging.getLogger(__name__)

# A job still undispatched this long after creation belongs to an API process that stopped
# between storing it and enqueueing it.
UNDISPATCHED_GRACE_S = 60.0

DESCRIPTION = """\
Audits whether an image classifier's saliency maps survive a small label-preserving perturbation,
and runs the other registered analyses as jobs.

Submit with `POST /v1/audits` (one image), `POST /v1/batches` (many) or `POST /v1/jobs` (job types
without uploads), then poll `GET /v1/jobs/{id}`. Errors are JSON `{"detail", "field"}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Create the API with its routes, error handlers, body limits and metrics."""
    settings = settings or get_settings()
    services = build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.storage_dir.mkdir(parents=True, exist_ok=True)
        app.state.submission_limiter = anyio.CapacityLimiter(audits.SUBMISSION_THREADS)
        app.state.batch_limiter = anyio.CapacityLimiter(batches.BATCH_THREADS)
        try:
            failed = services.jobs.fail_undispatched(UNDISPATCHED_GRACE_S)
        except TRANSIENT_REDIS_ERRORS as error:
            logger.warning("could not check for jobs left unenqueued: %s", error)
        else:
            if failed:
                logger.warning("failed %d job(s) that were never enqueued", len(failed))
        logger.info("API started; storage %s", settings.storage_dir)
        yield
        await services.reader.aclose()
        logger.info("API stopped")

    # NOTE: /docs (Swagger UI) and /redoc load their JavaScript and CSS from cdn.jsdelivr.net,
    # so they render blank without internet access. No installed package ships those assets
    # (FastAPI 0.165 does not), so /openapi.json is the offline reference.
    app = FastAPI(
        title="Fragility",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = services
    registry = CollectorRegistry()
    registry.register(JobCollector(services.jobs, services.heartbeats))
    app.state.metrics_registry = registry

    install_error_handlers(app)
    for module in (audits, batches, jobs, models, job_types, health):
        app.include_router(module.router)

    def body_limit(method: str, path: str) -> BodyLimit | None:
        if method != "POST":
            return None
        if path == "/v1/audits":
            return BodyLimit("image", "FRAGILITY_MAX_UPLOAD_BYTES", settings.max_upload_bytes)
        if path == "/v1/batches":
            return BodyLimit(
                "files", "FRAGILITY_MAX_BATCH_UPLOAD_BYTES", settings.max_batch_upload_bytes
            )
        if path == "/v1/models":
            return BodyLimit("weights", "FRAGILITY_MAX_MODEL_BYTES", settings.max_model_bytes)
        return BodyLimit("body")

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(RequestMetrics, registry=registry)
    return app
