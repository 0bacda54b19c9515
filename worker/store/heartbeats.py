"""Worker liveness: each worker writes a heartbeat per queue; /readyz reads them.

A sorted set ``{prefix}:workers`` maps "queue|hostname" to the Unix time of the last heartbeat,
so reading liveness costs one ZRANGEBYSCORE instead of a Celery broadcast and its timeout.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

# A worker beats every HEARTBEAT_INTERVAL_S and counts as alive for HEARTBEAT_TTL_S after a beat,
# so one or two missed beats (a busy Redis, a slow machine) do not mark it dead.
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_TTL_S = 20.0


class WorkerHeartbeats:
    """Writes and reads worker heartbeats.

    Args:
        client: a Redis client created with ``decode_responses=True``.
        prefix: first part of the key.
    """

    def __init__(self, client: redis.Redis, prefix: str = "fragility") -> None:
        self.redis = client
        self.key = f"{prefix}:workers"

    def beat(self, hostname: str, queues: Sequence[str]) -> None:
        """Mark ``hostname`` alive on each of ``queues`` now, and forget long-dead entries."""
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.key, {f"{queue}|{hostname}": now for queue in queues})
            pipe.zremrangebyscore(self.key, "-inf", now - 10 * HEARTBEAT_TTL_S)
            pipe.execute()

    def remove(self, hostname: str, queues: Sequence[str]) -> None:
        """Forget ``hostname`` (called on a clean shutdown)."""
        self.redis.zrem(self.key, *[f"{queue}|{hostname}" for queue in queues])

    def alive(self) -> dict[str, list[str]]:
        """Return {queue: [hostname, ...]} of the workers that beat within HEARTBEAT_TTL_S."""
        members = self.redis.zrangebyscore(self.key, time.time() - HEARTBEAT_TTL_S, "+inf")
        by_queue: dict[str, list[str]] = {}
        for member in members:
            queue, _, hostname = member.partition("|")
            by_queue.setdefault(queue, []).append(hostname)
        return by_queue
