"""The service's own records in Redis, and the storage directory shared by API and workers.

Imports neither torch nor Celery nor FastAPI: the API, the workers and the command line share it.
"""

from worker.store.files import Storage
from worker.store.heartbeats import WorkerHeartbeats
from worker.store.jobs import JobStore
from worker.store.models import ModelStore
from worker.store.records import (
    FINAL_STATUSES,
    JOB_STATUSES,
    BatchRecord,
    JobRecord,
    ModelRecord,
)
from worker.store.redis_client import connect_redis

__all__ = [
    "FINAL_STATUSES",
    "JOB_STATUSES",
    "BatchRecord",
    "JobRecord",
    "JobStore",
    "ModelRecord",
    "ModelStore",
    "Storage",
    "WorkerHeartbeats",
    "connect_redis",
]
