"""A private service stack for the tests: redis-server, the API and `fragility worker` processes.

Everything runs as real processes on loopback: Redis with append-only persistence in a temporary
folder, `fragility serve` on a free port, and one `fragility worker` with two pool processes on
both queues. All are stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator

import httpx
import pytest
import redis

from .stack import MAX_BATCH_IMAGES, MAX_UPLOAD_BYTES, Api, Process, RedisServer, wait_until


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    storage = tmp_path_factory.mktemp("storage")
    env = dict(os.environ)
    env.update(
        FRAGILITY_REDIS_URL=redis_server.url,
        FRAGILITY_STORAGE_DIR=str(storage),
        FRAGILITY_MAX_UPLOAD_BYTES=str(MAX_UPLOAD_BYTES),
        FRAGILITY_MAX_BATCH_IMAGES=str(MAX_BATCH_IMAGES),
        FRAGILITY_TORCH_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def api(service_env: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    server = Api(service_env, tmp_path_factory.mktemp("logs") / "api.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(
    service_env: dict, api: Api, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    log = tmp_path_factory.mktemp("logs") / "worker.log"
    argv = [
        sys.executable,
        "-m",
        "fragility",
        "worker",
        "--queues",
        "cpu,gpu",
        "--concurrency",
        "2",
    ]
    process = Process("worker", argv, service_env, log)
    process.start()

    def ready() -> bool:
        try:
            body = httpx.get(f"{api.url}/readyz", timeout=2).json()
        except httpx.TransportError:
            return False
        return body.get("ready") and len(process.children()) == 2

    wait_until(ready, 60, "the worker to send a heartbeat")
    yield process
    process.kill()


@pytest.fixture
def http(api: Api, worker: Process) -> Iterator[httpx.Client]:
    """An HTTP client on the API of a stack with a live worker."""
    with httpx.Client(base_url=api.url, timeout=30) as client:
        yield client


@pytest.fixture
def store_client(redis_server: RedisServer) -> redis.Redis:
    return redis_server.client()
