"""/healthz, /readyz and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.services import ServicesDep
from worker.store.redis_client import TRANSIENT_REDIS_ERRORS

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Return 200 while the API process is up; nothing else is checked."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """Return 200 when Redis responds and a worker sent a heartbeat recently, else 503.

    The body lists the live workers by queue, so a missing GPU worker shows even when the status
    is 200.
    """
    try:
        services.jobs.redis.ping()
        workers = services.heartbeats.alive()
    except TRANSIENT_REDIS_ERRORS as error:
        return JSONResponse(
            {"ready": False, "redis": False, "workers": {}, "detail": f"Redis: {error}"}, 503
        )
    ready = any(workers.values())
    body = {
        "ready": ready,
        "redis": True,
        "workers": workers,
        "detail": "ready" if ready else "no worker sent a heartbeat recently",
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text exposition of request and job metrics."""
    payload = generate_latest(request.app.state.metrics_registry)
    return PlainTextResponse(payload, media_type=CONTENT_TYPE_LATEST)
