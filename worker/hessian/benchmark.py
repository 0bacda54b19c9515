"""Runner of the ``hessian_benchmark`` job: time every (problem, size, method) cell.

For each problem and size the closed form runs first. Its median time is the denominator of
every ratio, and its Hessian is the reference of every error. A cell's record contains the
median, min and max seconds over the timed calls after ``warmup`` untimed ones. There are at
least ``repeats`` timed calls, and more for short calls until they add up to ``min_time_s``.
"""

from __future__ import annotations

import logging
import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from worker.context import JobContext
from worker.hessian.methods import (
    METHOD_LABELS,
    jax_unavailable_reason,
    make_hessian_call,
    to_torch,
)
from worker.hessian.params import HessianBenchmarkParams
from worker.hessian.plot import plot_timings
from worker.hessian.problems import HessianProblem, build_problem
from worker.hessian.report import format_summary, verdict_sentence
from worker.hessian.timing import time_call

logger = logging.getLogger(__name__)

PLOT_NAME = "hessian_benchmark.png"
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(requested: str) -> torch.device:
    """Return the torch device for 'auto', 'cpu' or 'cuda'.

    Raises:
        ValueError: when 'cuda' is requested and torch.cuda.is_available() is False.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device is 'cuda' but torch finds no CUDA device; use device 'auto' or 'cpu'"
        )
    return torch.device(requested)


def cpu_name() -> str:
    """Return the CPU model from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(device: torch.device, dtype: str) -> dict[str, Any]:
    """Return the software and hardware that the timings depend on."""
    try:
        import jax

        jax_version: str | None = jax.__version__
    except ImportError:
        jax_version = None
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": device.type,
        "device_name": device_name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "dtype": dtype,
        "torch": torch.__version__,
        "jax": jax_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def measure_cell(
    method: str,
    problem: HessianProblem,
    params: HessianBenchmarkParams,
    reference: torch.Tensor | None,
    reference_seconds: float | None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """Time ``method`` on ``problem`` and return its record and its Hessian.

    ``reference`` and ``reference_seconds`` are the closed form's Hessian and median time, or
    None when ``method`` is the closed form itself.
    """
    # NOTE: the CUDA path (this synchronisation, float64 and JAX on a GPU) has not run on a GPU
    # yet. The tests cover the CPU only.
    synchronize = torch.cuda.synchronize if problem.x.device.type == "cuda" else None
    call = make_hessian_call(method, problem)
    timing = time_call(
        call,
        warmup=params.warmup,
        repeats=params.repeats,
        min_seconds=params.min_time_s,
        max_repeats=params.max_repeats,
        synchronize=synchronize,
    )
    hessian = to_torch(timing.output, problem.x)
    if reference is None:
        reference = hessian
        reference_seconds = timing.median

    max_abs_error = (hessian - reference).abs().max().item()
    scale = reference.abs().max().item()
    relative_error = max_abs_error / scale if scale > 0 else max_abs_error
    # A NaN or infinite error compares False with the tolerance, so test finiteness first.
    flagged = not math.isfinite(relative_error) or relative_error > (
        params.resolved_error_tolerance
    )
    record = {
        "problem": problem.name,
        "size": problem.size,
        "hessian_dim": problem.hessian_dim,
        "method": method,
        "seconds_median": timing.median,
        "seconds_min": timing.min,
        "seconds_max": timing.max,
        "repeats": len(timing.seconds),
        "ratio_to_closed_form": timing.median / reference_seconds,
        "max_abs_error": max_abs_error,
        "relative_error": relative_error,
        "flagged": flagged,
    }
    return record, hessian


def measure_all(
    params: HessianBenchmarkParams,
    methods: list[str],
    device: torch.device,
    context: JobContext,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure every (problem, size, method) cell and return the records and the skipped cells.

    ``methods`` starts with closed_form, whose Hessian and time are the reference of the cell.
    """
    dtype = DTYPES[params.dtype]
    cells = [(problem, size) for problem in params.problems for size in params.sizes_for(problem)]
    total = len(cells) * len(methods)
    done = 0
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for problem_name, size in cells:
        problem = build_problem(problem_name, size, params, dtype, device)
        reference: torch.Tensor | None = None
        reference_seconds: float | None = None
        for method in methods:
            context.check_cancelled()
            if method == "autograd_rowwise" and problem.hessian_dim > params.rowwise_max_dim:
                reason = (
                    f"skipped: Hessian side {problem.hessian_dim} is above rowwise_max_dim "
                    f"{params.rowwise_max_dim}"
                )
                skipped.append(
                    {"method": method, "problem": problem_name, "size": size, "reason": reason}
                )
            else:
                record, hessian = measure_cell(
                    method, problem, params, reference, reference_seconds
                )
                if reference is None:
                    reference = hessian
                    reference_seconds = record["seconds_median"]
                results.append(record)
                logger.debug("job %s: %s", context.job_id, record)
            done += 1
            context.progress(done / total, f"{problem_name} size {size}: {method}")
        del problem, reference
    return results, skipped


def run_hessian_benchmark(
    params: HessianBenchmarkParams,
    inputs: list[Path],
    out_dir: Path,
    context: JobContext,
) -> dict[str, Any]:
    """Run the benchmark, write the plot into ``out_dir`` and return the result.

    Progress is reported after each (problem, size, method) cell, skipped cells included, and
    cancellation is checked before each cell. With ``params.threads`` set, torch's intra-op
    thread count is changed for the run and restored afterwards.

    Returns:
        A JSON-serialisable dict with ``results`` (one record per measured cell), ``skipped``
        and ``flagged`` lists, ``verdicts`` (one sentence per method), ``machine``, ``params``,
        ``plots`` (file names under ``out_dir``) and a multi-line ``summary``.

    Raises:
        ValueError: when input files are given, or CUDA is requested but missing.
    """
    if inputs:
        raise ValueError(
            f"hessian_benchmark takes no input files, got {len(inputs)}: "
            f"{', '.join(str(path) for path in inputs)}"
        )
    device = resolve_device(params.device)
    logger.info(
        "job %s: hessian benchmark started on %s, %s; problems %s; methods %s",
        context.job_id,
        device,
        params.dtype,
        ", ".join(params.problems),
        ", ".join(params.methods),
    )

    skipped: list[dict[str, Any]] = []
    skip_reasons: dict[str, str] = {}
    methods = ["closed_form", *(m for m in params.methods if m != "closed_form")]
    if "jax" in methods:
        reason = jax_unavailable_reason(device)
        if reason is not None:
            methods.remove("jax")
            skipped.append({"method": "jax", "reason": reason})
            logger.info("job %s: method jax %s", context.job_id, reason)

    previous_threads = torch.get_num_threads()
    if params.threads is not None:
        torch.set_num_threads(params.threads)
    try:
        machine = machine_info(device, params.dtype)
        results, skipped_cells = measure_all(params, methods, device, context)
    finally:
        torch.set_num_threads(previous_threads)
    skipped.extend(skipped_cells)
    for entry in skipped:
        skip_reasons.setdefault(entry["method"], entry["reason"])

    flagged = [
        {key: record[key] for key in ("problem", "size", "method", "relative_error")}
        for record in results
        if record["flagged"]
    ]
    verdicts = {
        method: verdict_sentence(
            method, results, params.problems, device.type, skip_reasons.get(method)
        )
        for method in params.methods
        if method != "closed_form"
    }
    title = f"Hessian time against size: {machine['device_name']}, {params.dtype}"
    plot_timings(results, params.problems, out_dir / PLOT_NAME, title)

    result: dict[str, Any] = {
        "job_type": "hessian_benchmark",
        "params": params.summary_fields(),
        "machine": machine,
        "methods": {method: METHOD_LABELS[method] for method in methods},
        "results": results,
        "skipped": skipped,
        "flagged": flagged,
        "verdicts": verdicts,
        "plots": [PLOT_NAME],
    }
    result["summary"] = format_summary(result)
    logger.info(
        "job %s: hessian benchmark finished: %d cells measured, %d skipped, %d flagged",
        context.job_id,
        len(results),
        len(skipped),
        len(flagged),
    )
    return result
