"""The job task and the worker's Redis clients under Redis errors, against a private Redis.

The task runs in this process (Celery's eager apply, which also runs its retries), with the
attempt replaced by a stub, so only the store calls around it are under test. Redis errors come
from a real redis-server, which rejects every write with an OOM error reply under
``maxmemory 1``. It is a server of its own, so the out-of-memory spells do not reach the service
stack.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from kombu import Connection

from worker import celery_app as celery_module
from worker import tasks
from worker.store import JobStore, ModelStore, Storage, WorkerHeartbeats
from worker.store.files import new_id
from worker.store.progress import RecordedProgress
from worker.store.redis_client import connect_redis

from .stack import RedisServer, wait_until

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("private-redis"))
    server.start()
    yield server
    server.stop()


@contextmanager
def out_of_memory(server: RedisServer) -> Iterator[None]:
    """Make Redis reject writes with OOM error replies until the block ends."""
    admin = server.client()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", "1")
    try:
        yield
    finally:
        admin.config_set("maxmemory", "0")


@pytest.fixture
def job_store(private_redis: RedisServer) -> JobStore:
    return JobStore(connect_redis(private_redis.url), prefix=f"test-{new_id()[:8]}")


@pytest.fixture
def task_stores(job_store: JobStore, tmp_path, monkeypatch) -> JobStore:
    """Point the task at the private Redis and a temporary storage directory."""
    models = ModelStore(job_store.redis, prefix=job_store.prefix)
    stores = (job_store, models, Storage(tmp_path))
    monkeypatch.setattr(tasks, "_stores", lambda: stores)
    monkeypatch.setattr(tasks, "REQUEUE_MESSAGE_DELAY_S", 0.0, raising=False)
    return job_store


@pytest.mark.parametrize(
    "error",
    [redis.ConnectionError("connection lost"), redis.exceptions.OutOfMemoryError("OOM")],
    ids=["connection", "oom"],
)
def test_redis_error_retries_not_worker_lost(task_stores, monkeypatch, error):
    job = task_stores.create_job("audit", "gpu", {})

    def attempt(record, token):
        raise error

    monkeypatch.setattr(tasks, "_run_attempt", attempt)
    tasks.run_job.apply(args=[job.id])

    record = task_stores.get_job(job.id)
    assert record.status == "failed"
    assert record.error["type"] == type(error).__name__
    assert record.attempts == tasks.MAX_TRANSIENT_RETRIES + 1
    assert record.lost_attempts == 0


def test_progress_write_skipped_on_oom(private_redis, job_store, monkeypatch, caplog):
    monkeypatch.setattr("worker.store.progress.MIN_INTERVAL_S", 0.0)
    job = job_store.create_job("audit", "gpu", {})
    token = new_id()
    job_store.start(job.id, token, "w", 3)
    progress = RecordedProgress(job_store, job.id, token)
    with caplog.at_level(logging.WARNING, "worker.store.progress"), out_of_memory(private_redis):
        for step in range(5):
            progress.write(step / 10, f"step {step}")
        assert not progress.is_cancelled()
    warnings = [r for r in caplog.records if "progress write failed" in r.getMessage()]
    assert len(warnings) == 1
    progress.write(0.9, "after")
    assert job_store.get_job(job.id).message == "after"


def test_final_write_waits_for_redis(private_redis, task_stores, monkeypatch):
    job = task_stores.create_job("audit", "gpu", {})
    admin = private_redis.client()
    recovery = threading.Timer(1.0, admin.config_set, args=("maxmemory", "0"))

    def attempt(record, token):
        # Redis refuses writes from now until 1 s later, so the final status write meets it.
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        recovery.start()
        return "succeeded", {"verdict": "robust"}, None

    monkeypatch.setattr(tasks, "_run_attempt", attempt)
    try:
        tasks.run_job.apply(args=[job.id])
    finally:
        recovery.cancel()
        admin.config_set("maxmemory", "0")

    record = task_stores.get_job(job.id)
    assert record.status == "succeeded"
    assert record.result == {"verdict": "robust"}


def test_final_write_gives_message_back(private_redis, task_stores, monkeypatch):
    monkeypatch.setattr(tasks, "FINAL_WRITE_TIMEOUT_S", 0.5, raising=False)
    job = task_stores.create_job("audit", "gpu", {})

    def attempt(record, token):
        private_redis.client().config_set("maxmemory-policy", "noeviction")
        private_redis.client().config_set("maxmemory", "1")
        return "succeeded", {"verdict": "robust"}, None

    monkeypatch.setattr(tasks, "_run_attempt", attempt)
    try:
        result = tasks.run_job.apply(args=[job.id])
    finally:
        private_redis.client().config_set("maxmemory", "0")

    assert result.state == "REJECTED"
    assert task_stores.get_job(job.id).status == "running"
    # The message's next delivery takes the job over, as after a lost worker process.
    assert task_stores.start(job.id, new_id(), "w", 3).outcome == "run"
    assert task_stores.get_job(job.id).lost_attempts == 1


def test_heartbeat_survives_oom(private_redis):
    heartbeats = WorkerHeartbeats(
        connect_redis(private_redis.url, retries=1), prefix=f"test-{new_id()[:8]}"
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=celery_module._heartbeat_loop,
        args=(heartbeats, "host-a", ["cpu"], stop, 0.05),
        daemon=True,
    )
    thread.start()
    try:
        with out_of_memory(private_redis):
            time.sleep(0.3)
        assert thread.is_alive()
        heartbeats.redis.delete(heartbeats.key)
        wait_until(
            lambda: heartbeats.alive().get("cpu") == ["host-a"], 5, "a heartbeat after the OOM"
        )
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert heartbeats.alive() == {}


def test_ack_survives_oom(private_redis):
    admin = private_redis.client()
    queue_name = f"test-ack-{new_id()[:8]}"
    with Connection(private_redis.url, transport="worker.celery_app:RedisTransport") as broker:
        queue = broker.SimpleQueue(queue_name)
        try:
            queue.put({"job": "id"})
            message = queue.get(timeout=5)
            assert admin.hlen("unacked") == 1
            with out_of_memory(private_redis):
                message.ack()
            # Not acknowledged: Redis delivers it again after the visibility timeout.
            assert admin.hlen("unacked") == 1
        finally:
            queue.close()
