"""The objects a request handler needs, built once per app and shared by all requests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import redis.asyncio
from fastapi import Depends, Request
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from fragility.settings import Settings
from worker.jobs import JobType
from worker.store import JobStore, ModelStore, Storage, WorkerHeartbeats, connect_redis
from worker.store.redis_client import TRANSIENT_REDIS_ERRORS

# The API fails a request after a few quick retries instead of holding it while Redis is away.
API_REDIS_RETRIES = 2

Dispatcher = Callable[[str, JobType], None]


@dataclass
class Services:
    """Settings, stores and the function that enqueues a job message.

    ``reader`` is an asyncio Redis client for the status read, the hot path: it runs on the
    event loop instead of a worker thread.
    """

    settings: Settings
    reader: redis.asyncio.Redis
    jobs: JobStore
    models: ModelStore
    storage: Storage
    heartbeats: WorkerHeartbeats
    dispatch: Dispatcher


def build_services(settings: Settings) -> Services:
    """Connect to Redis (lazily: nothing is sent until the first request) and build Services."""
    from worker.celery_app import dispatch_job

    client = connect_redis(settings.redis_url, retries=API_REDIS_RETRIES)
    reader = redis.asyncio.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        retry=AsyncRetry(ExponentialBackoff(cap=2.0, base=0.1), API_REDIS_RETRIES),
        retry_on_error=list(TRANSIENT_REDIS_ERRORS),
    )
    return Services(
        settings=settings,
        reader=reader,
        jobs=JobStore(client),
        models=ModelStore(client),
        storage=Storage(settings.storage_dir),
        heartbeats=WorkerHeartbeats(client),
        dispatch=dispatch_job,
    )


async def get_services(request: Request) -> Services:
    """FastAPI dependency: the Services of the running app (async, so it needs no thread)."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
