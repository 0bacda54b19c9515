"""Registry of job types: each analysis, its parameter model and the function that runs it.

The registry imports no torch: the API process reads it to validate parameters and to publish
their JSON schemas, and only the worker (or the command line) imports an analysis's runner, by
its dotted path, when a job of that type runs.

A runner has the signature::

    run(params: ParamsModel, inputs: list[Path], out_dir: Path, context: JobContext) -> dict

``inputs`` are the uploaded files of the job (an image for the audit, none for benchmarks); they
are never part of ``params``, so a client cannot point a job at a path on the server. The runner
writes its artifacts under ``out_dir`` and returns the JSON-serialisable result.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from worker.audit.params import AuditParams
from worker.context import JobContext
from worker.hessian.params import HessianBenchmarkParams

Runner = Callable[[BaseModel, list[Path], Path, JobContext], dict[str, Any]]


@dataclass(frozen=True)
class JobType:
    """One analysis that the service and the command line can run.

    Attributes:
        name: the type name used in ``POST /v1/jobs`` and ``fragility run``.
        params_model: pydantic model that validates the parameters.
        runner: dotted path "module:function" of the runner, imported only where it runs.
        description: one line shown in ``GET /v1/job-types`` and ``fragility run --help``.
        input_files: how many uploaded files the job takes ("none" or "one").
        queue: Celery queue; "gpu" jobs benefit from CUDA, "cpu" jobs do not.
        soft_time_limit_s: seconds after which the runner is asked to stop (SoftTimeLimitExceeded).
        time_limit_s: seconds after which the worker process running it is killed.
    """

    name: str
    params_model: type[BaseModel]
    runner: str
    description: str
    input_files: Literal["none", "one"] = "none"
    queue: Literal["cpu", "gpu"] = "cpu"
    soft_time_limit_s: int = 1800
    time_limit_s: int = 1900

    def load_runner(self) -> Runner:
        """Import and return the runner function (this imports torch for most analyses)."""
        module_name, _, function_name = self.runner.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, function_name)


JOB_TYPES: dict[str, JobType] = {}


def register(job_type: JobType) -> JobType:
    """Add a job type to the registry; a second registration of the same name is a bug."""
    if job_type.name in JOB_TYPES:
        raise ValueError(f"job type {job_type.name!r} is already registered")
    JOB_TYPES[job_type.name] = job_type
    return job_type


def get_job_type(name: str) -> JobType:
    """Return the job type called ``name`` or raise ValueError listing the known ones."""
    try:
        return JOB_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(JOB_TYPES))
        raise ValueError(f"unknown job type {name!r}; known types: {known}") from None


register(
    JobType(
        name="audit",
        params_model=AuditParams,
        runner="worker.audit.job:run_audit_job",
        description="Saliency-map fragility audit of one image against a label-preserving attack.",
        input_files="one",
        queue="gpu",
        soft_time_limit_s=1800,
        time_limit_s=1900,
    )
)

# Queue "gpu": the claim has a GPU half (about 1000x) that only a CUDA worker can measure, and
# device "auto" falls back to the CPU. The default parameters took about 2 minutes on 2 shared
# CPU cores, JAX included (docs/hessian_benchmark.md). The limits leave room for larger sizes.
register(
    JobType(
        name="hessian_benchmark",
        params_model=HessianBenchmarkParams,
        runner="worker.hessian.benchmark:run_hessian_benchmark",
        description="Time closed-form Hessians against torch.func, torch.autograd and JAX.",
        input_files="none",
        queue="gpu",
        soft_time_limit_s=1800,
        time_limit_s=1900,
    )
)
