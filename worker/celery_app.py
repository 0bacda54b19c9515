"""The Celery application: Redis broker, JSON messages, late acknowledgement, per-type limits.

Delivery guarantees come from these settings together with the job store:

- ``task_acks_late`` with ``task_reject_on_worker_lost``: a message is acknowledged only after its
  job finished, and a pool process that dies (SIGKILL, out of memory) puts the message back on the
  queue, so another process runs the job again. JobStore.start counts these deliveries and fails
  the job after ``max_attempts``.
- ``worker_prefetch_multiplier = 1``: a worker reserves no more messages than it has processes, so
  queued jobs stay in Redis, where another worker (or a cancel) can reach them.
- ``visibility_timeout`` above the longest hard time limit: Redis hands an unacknowledged message
  to another worker only after that long, so a healthy long job is never run twice at once.
- Messages carry the job id only; parameters and file ids live in the job record.

The API process imports this module to enqueue jobs (send_task, by name) and so never imports
the task module or torch.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import redis
from celery import Celery, signals
from kombu.transport import redis as kombu_redis

from fragility.settings import Settings, get_settings
from worker.jobs import JOB_TYPES, JobType

if TYPE_CHECKING:
    from worker.store import WorkerHeartbeats

logger = logging.getLogger(__name__)

TASK_NAME = "fragility.run_job"

# Added to the longest hard time limit to get the default visibility timeout.
VISIBILITY_MARGIN_S = 600


def time_limits(job_type: JobType, settings: Settings) -> tuple[int, int]:
    """Return (soft, hard) time limits in seconds for ``job_type``, after settings overrides."""
    return settings.time_limits.get(
        job_type.name, (job_type.soft_time_limit_s, job_type.time_limit_s)
    )


def visibility_timeout(settings: Settings) -> int:
    """Return the broker visibility timeout in seconds.

    Raises:
        ValueError: FRAGILITY_VISIBILITY_TIMEOUT_S is set at or below the longest hard time limit;
            Redis would then hand a running job to a second worker.
    """
    longest = max((time_limits(t, settings)[1] for t in JOB_TYPES.values()), default=0)
    if settings.visibility_timeout_s is None:
        return longest + VISIBILITY_MARGIN_S
    if settings.visibility_timeout_s <= longest:
        raise ValueError(
            f"visibility_timeout_s must exceed the longest hard time limit ({longest} s), got "
            f"{settings.visibility_timeout_s}; raise it or lower FRAGILITY_TIME_LIMITS"
        )
    return settings.visibility_timeout_s


class _QoS(kombu_redis.QoS):
    """kombu's Redis QoS that survives a collected transport and Redis error replies.

    After a lost broker connection (a Redis restart), Celery 5.7 collects the transport, which
    sets its client to None, but then still uses the old channel twice: closing it restores the
    unacknowledged messages, and the jobs that were running acknowledge their messages on it when
    they finish. kombu 5.7 needs the client for both, raises AttributeError, and the worker stops
    with "Unrecoverable error". On such a channel this class skips the restore and sends
    acknowledgements and rejections through a new connection to the broker.

    An acknowledgement or rejection that Redis answers with an error reply (OOM, MISCONF,
    READONLY) is logged, and the message stays unacknowledged, instead of stopping the worker.

    NOTE: this overrides kombu 5.7 internals (restore_unacked, pipe_or_acquire, restore_by_tag,
    ack, reject); tests/service/test_recovery.py restarts Redis mid-job to catch a kombu release
    that changes them.
    """

    def _collected(self) -> bool:
        transport = getattr(self.channel, "connection", None)
        return transport is None or transport.client is None

    @contextmanager
    def _fresh_client(self) -> Iterator[redis.Redis]:
        client = redis.Redis.from_url(get_settings().redis_url)
        try:
            yield client
        finally:
            client.close()

    def restore_unacked(self, client: object = None) -> None:
        if not self._collected():
            super().restore_unacked(client)
            return
        # The messages stay in Redis's unacked hash: the running jobs acknowledge them when they
        # finish, and a worker that dies first leaves them for redelivery after the visibility
        # timeout. Putting them back on the queue now would start a second copy of each job.
        logger.warning(
            "broker connection lost while %d job message(s) were unacknowledged; they are "
            "acknowledged when their jobs finish",
            len(self._delivered),
        )

    @contextmanager
    def pipe_or_acquire(self, pipe: object = None, client: object = None) -> Iterator[object]:
        if pipe is None and client is None and self._collected():
            with self._fresh_client() as fresh:
                yield fresh.pipeline()
            return
        with super().pipe_or_acquire(pipe, client) as acquired:
            yield acquired

    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)
        except redis.ResponseError as error:
            # Celery survives only connection errors here; an error reply (OOM, MISCONF,
            # READONLY) would stop the worker with "Unrecoverable error". The message stays in
            # the unacked hash, Redis delivers it again after the visibility timeout, and
            # JobStore.start drops it when its job is final.
            logger.error(
                "could not acknowledge message %s (%s); it is delivered again after the "
                "visibility timeout",
                delivery_tag,
                error,
            )

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except redis.ResponseError as error:
            # As in ack: the message stays unacknowledged and is delivered again later.
            logger.error(
                "could not reject message %s (%s); it is delivered again after the "
                "visibility timeout",
                delivery_tag,
                error,
            )

    def restore_by_tag(self, tag: str, client: object = None, leftmost: bool = False) -> None:
        if client is None and self._collected():
            with self._fresh_client() as fresh:
                super().restore_by_tag(tag, client=fresh, leftmost=leftmost)
            return
        super().restore_by_tag(tag, client=client, leftmost=leftmost)


class _Channel(kombu_redis.Channel):
    QoS = _QoS


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport whose workers survive a Redis restart (see _QoS)."""

    Channel = _Channel


def create_celery_app(settings: Settings | None = None) -> Celery:
    """Build the Celery application from the settings."""
    settings = settings or get_settings()
    app = Celery("fragility", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.redis_url,
        broker_transport="worker.celery_app:RedisTransport",
        broker_transport_options={"visibility_timeout": visibility_timeout(settings)},
        broker_connection_retry_on_startup=True,
        # A lost broker connection (a Redis restart) leaves running jobs running: their record
        # and artifacts are written through the job store, which retries, and the message is
        # acknowledged once Redis is back.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        # Pool processes import torch and the runners when they start (worker.tasks._preload),
        # which takes several seconds on a busy machine; Celery's default wait is 4 s.
        worker_proc_alive_timeout=120,
        task_default_queue="cpu",
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


celery_app = create_celery_app()


def dispatch_job(job_id: str, job_type: JobType, queue: str | None = None) -> None:
    """Send the message of a stored job to its queue, with the job type's time limits."""
    settings = get_settings()
    soft, hard = time_limits(job_type, settings)
    celery_app.send_task(
        TASK_NAME,
        args=[job_id],
        task_id=job_id,
        queue=queue or job_type.queue,
        soft_time_limit=soft,
        time_limit=hard,
    )


# Worker process hooks --------------------------------------------------------------------------

_heartbeat_stop = threading.Event()
_heartbeat_thread: threading.Thread | None = None


def _heartbeat_loop(
    heartbeats: WorkerHeartbeats,
    hostname: str,
    queues: list[str],
    stop: threading.Event,
    interval_s: float,
) -> None:
    """Beat every ``interval_s`` seconds until ``stop`` is set, then remove the heartbeat.

    /readyz counts a worker as alive only while this thread beats, so a failed beat (a Redis
    outage, an error reply such as OOM) is logged and the loop goes on.
    """
    failures = 0
    while not stop.is_set():
        try:
            heartbeats.beat(hostname, queues)
        except Exception as error:  # the thread must outlive any error, or /readyz turns 503
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                logger.warning(
                    "heartbeat of %s failed %d time(s): %s: %s",
                    hostname,
                    failures,
                    type(error).__name__,
                    error,
                    exc_info=not isinstance(error, redis.RedisError),
                )
        else:
            if failures:
                logger.info("heartbeat of %s works again after %d failure(s)", hostname, failures)
            failures = 0
        stop.wait(interval_s)
    try:
        heartbeats.remove(hostname, queues)
    except redis.RedisError as error:
        logger.warning("could not remove the heartbeat of %s: %s", hostname, error)


@signals.worker_init.connect
def _refuse_fork_after_cuda(sender: object = None, **kwargs: object) -> None:
    """Stop a prefork worker whose main process already started CUDA: its children would crash."""
    torch = sys.modules.get("torch")
    pool = getattr(getattr(sender, "pool_cls", None), "__module__", "")
    if torch is not None and "prefork" in pool and torch.cuda.is_initialized():
        raise RuntimeError(
            "CUDA was initialised in the worker's main process before the prefork pool started; "
            "import torch only inside jobs, or run the worker with --pool solo"
        )


@signals.worker_ready.connect
def _start_heartbeat(sender: object = None, **kwargs: object) -> None:
    hostname = getattr(sender, "hostname", "worker")
    queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    logger.info("worker %s ready on queues %s", hostname, ", ".join(queues))
    from worker.store import WorkerHeartbeats, connect_redis
    from worker.store.heartbeats import HEARTBEAT_INTERVAL_S

    heartbeats = WorkerHeartbeats(connect_redis(get_settings().redis_url, retries=1))
    global _heartbeat_thread
    _heartbeat_thread = threading.Thread(
        target=_heartbeat_loop,
        args=(heartbeats, hostname, queues, _heartbeat_stop, HEARTBEAT_INTERVAL_S),
        name="fragility-heartbeat",
        daemon=True,
    )
    _heartbeat_thread.start()


@signals.worker_shutdown.connect
def _stop_heartbeat(sender: object = None, **kwargs: object) -> None:
    _heartbeat_stop.set()
    if _heartbeat_thread is not None:
        _heartbeat_thread.join(timeout=5)
