"""Registered models: records in Redis, files under storage/models/{id}/.

A model is registered by the API, which can check the spec and the file type but cannot load
weights (it has no torch). A worker sets the status when it first loads the model for a job:
"verified" after a successful load, "invalid" with the loading error otherwise.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from worker.store.records import ModelRecord, ModelStatus


class ModelStore:
    """Reads and writes model records.

    Args:
        client: a Redis client created with ``decode_responses=True``.
        prefix: first part of every key.
    """

    def __init__(self, client: redis.Redis, prefix: str = "fragility") -> None:
        self.redis = client
        self.prefix = prefix
        self._index_key = f"{prefix}:models"

    def _key(self, model_id: str) -> str:
        return f"{self.prefix}:model:{model_id}"

    def add(
        self, model_id: str, spec: dict[str, Any], spec_sha256: str, weights_sha256: str
    ) -> ModelRecord:
        """Store the record of a model whose files are already in place."""
        record = ModelRecord(
            id=model_id,
            created_at=time.time(),
            spec=spec,
            spec_sha256=spec_sha256,
            weights_sha256=weights_sha256,
        )
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._key(model_id),
                mapping={
                    "id": model_id,
                    "created_at": repr(record.created_at),
                    "spec": json.dumps(spec),
                    "spec_sha256": spec_sha256,
                    "weights_sha256": weights_sha256,
                    "status": record.status,
                    "status_message": "",
                },
            )
            pipe.zadd(self._index_key, {model_id: record.created_at})
            pipe.execute()
        return record

    def get(self, model_id: str) -> ModelRecord | None:
        """Return the model, or None when no model has that id."""
        fields = self.redis.hgetall(self._key(model_id))
        if not fields:
            return None
        return ModelRecord(
            id=fields["id"],
            created_at=float(fields["created_at"]),
            spec=json.loads(fields["spec"]),
            spec_sha256=fields["spec_sha256"],
            weights_sha256=fields["weights_sha256"],
            status=fields.get("status", "unverified"),
            status_message=fields.get("status_message", ""),
        )

    def list(self) -> list[ModelRecord]:
        """Return every registered model, oldest first."""
        records = (self.get(model_id) for model_id in self.redis.zrange(self._index_key, 0, -1))
        return [record for record in records if record is not None]

    def set_status(self, model_id: str, status: ModelStatus, message: str = "") -> None:
        """Record the outcome of a worker loading the model."""
        if self.redis.exists(self._key(model_id)):
            self.redis.hset(
                self._key(model_id), mapping={"status": status, "status_message": message[:1000]}
            )
