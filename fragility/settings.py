"""Settings shared by the API, the workers and the command line, read from the environment.

Every variable has the prefix ``FRAGILITY_``; for example ``FRAGILITY_REDIS_URL``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """One typed settings object; see README.md for the list of variables."""

    model_config = SettingsConfigDict(env_prefix="FRAGILITY_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis URL (broker and job store)."
    )
    storage_dir: Path = Field(
        Path("storage"), description="Directory shared by API and workers for inputs and artifacts."
    )
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Largest accepted upload, in bytes (default 20 MiB)."
    )
    max_image_pixels: int = Field(
        40_000_000,
        gt=0,
        description="Largest accepted image, in pixels (width x height), before decoding; larger "
        "images are rejected as possible decompression bombs (default 40 megapixels).",
    )
    max_model_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description="Largest weights or TorchScript file for POST /v1/models (default 2 GiB).",
    )
    max_batch_images: int = Field(
        200, gt=0, description="Maximum images in one batch (POST /v1/batches), default 200."
    )
    max_batch_upload_bytes: int = Field(
        200 * 1024 * 1024,
        gt=0,
        description="Largest batch request body and largest uncompressed zip content, in bytes "
        "(default 200 MiB); each image in it must also stay under max_upload_bytes.",
    )
    max_batch_pixels: int = Field(
        500_000_000,
        gt=0,
        description="Most pixels (width x height, summed over the images) in one batch, read "
        "from the image headers before any image is decoded, because the API decodes every "
        "image of a batch as a check (default 500 million: 200 images of about 1580x1580, or "
        "12 images at the 40-megapixel image limit).",
    )
    time_limits: dict[str, tuple[int, int]] = Field(
        default_factory=dict,
        description="Per job type [soft, hard] time limits in seconds, overriding the job type's "
        'own, as JSON: {"audit": [600, 660]}. A job past its soft limit fails as timed out; past '
        "its hard limit the worker process running it is killed.",
    )
    visibility_timeout_s: int | None = Field(
        None,
        gt=0,
        description="Seconds before Redis hands an unacknowledged job message to another worker; "
        "must exceed the longest hard time limit. Default: longest hard limit + 600.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Deliveries of one job whose worker process was lost (killed, out of "
        "memory) before the job fails as WorkerLost; stops a job that kills its worker from "
        "looping forever. Retries after a Redis error do not count.",
    )
    worker_concurrency: int = Field(
        1, ge=1, description="Worker processes per `fragility worker` (default 1)."
    )
    worker_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["cpu", "gpu"],
        description='Queues a worker consumes, as JSON (["cpu", "gpu"]) or comma-separated.',
    )
    worker_pool: str = Field(
        "prefork",
        description="Celery pool: 'prefork' (default; torch is imported only in the forked "
        "pool processes, so CUDA starts after the fork, and time limits are enforced) or 'solo' "
        "(one job at a time in the worker process itself; Celery enforces no time limit there).",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch.set_num_threads in each worker process; default: torch's own choice.",
    )
    api_host: str = Field("127.0.0.1", description="Address `fragility serve` binds to.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port `fragility serve` listens on.")
    api_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL the client commands talk to."
    )

    @field_validator("worker_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("time_limits")
    @classmethod
    def _check_time_limits(cls, value: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        for name, (soft, hard) in value.items():
            if not 0 < soft < hard:
                raise ValueError(
                    f"time_limits[{name!r}] must be [soft, hard] seconds with 0 < soft < hard, "
                    f"got {[soft, hard]}"
                )
        return value

    @field_validator("worker_pool")
    @classmethod
    def _check_pool(cls, value: str) -> str:
        if value not in ("prefork", "solo"):
            raise ValueError(f"worker_pool must be 'prefork' or 'solo', got {value!r}")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment once."""
    return Settings()
