"""A Redis client that rides out short outages, such as a Redis restart."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
from redis.retry import Retry

# Errors after which a command is worth sending again: the server went away or is still loading
# its append-only file after a restart.
TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    BusyLoadingError,
)


def connect_redis(url: str, retries: int = 3, socket_timeout_s: float = 5.0) -> redis.Redis:
    """Return a client for ``url`` that retries each command on connection errors.

    Args:
        url: Redis URL, for example ``redis://127.0.0.1:6379/0``.
        retries: attempts after the first, with exponential backoff from 0.1 s capped at 2 s.
            The API uses few (a request should fail fast); workers use more, so that a job in
            progress survives a Redis restart of some seconds.
        socket_timeout_s: seconds to wait for a reply or a connection.
    """
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries)
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=retry,
        retry_on_error=list(TRANSIENT_REDIS_ERRORS),
        health_check_interval=30,
    )
