"""Entry points that run an audit from files: the job runner and the helpers the CLI shares."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fragility.settings import get_settings
from models.hashing import bytes_sha256
from models.loading import LoadedModel, load_model
from worker.audit.artifacts import write_artifacts
from worker.audit.audit import AuditInput, audit_images, resolve_device
from worker.audit.images import load_image, to_model_input
from worker.audit.params import AuditParams
from worker.audit.software import software_versions
from worker.context import JobContext

logger = logging.getLogger(__name__)


def prepare_input(path: Path, loaded: LoadedModel, max_pixels: int) -> AuditInput:
    """Decode the image at ``path`` and convert it to the model's channels and input size.

    Raises:
        ImageError: the file is not a usable image or is over ``max_pixels``.
    """
    data = path.read_bytes()
    decoded = load_image(data, max_pixels=max_pixels, name=path.name)
    pixels, conversions = to_model_input(
        decoded, loaded.spec.channels, tuple(loaded.spec.input_size)
    )
    source = {
        "format": decoded.source_format,
        "bit_depth": decoded.bit_depth,
        "size": list(decoded.size),
        "channels": int(decoded.pixels.shape[2]),
        "conversions": conversions,
    }
    return AuditInput(pixels=pixels, sha256=bytes_sha256(data), source=source)


def finish_report(report: dict[str, Any], job_id: str) -> dict[str, Any]:
    """Add the job id, the time and the software versions to a report."""
    report["job_id"] = job_id
    report["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["software"] = software_versions()
    return report


def run_audit_job(
    params: AuditParams, inputs: list[Path], out_dir: Path, context: JobContext
) -> dict[str, Any]:
    """Audit one image file and write report.json and the artifacts into ``out_dir``.

    The runner of the "audit" job type. The image's pixel limit comes from the settings
    (FRAGILITY_MAX_IMAGE_PIXELS).

    Raises:
        ValueError: (ModelSpecError, ImageError, invalid parameters) a permanent failure.
        JobCancelled: the job was cancelled.
    """
    if len(inputs) != 1:
        raise ValueError(f"the audit takes exactly one image, got {len(inputs)}")
    started = time.perf_counter()
    logger.info(
        "job %s: audit started (model %s, attack %s)", context.job_id, params.model, params.attack
    )
    context.progress(0.0, "loading model")
    loaded = load_model(params.model, device=resolve_device(params.device))
    item = prepare_input(inputs[0], loaded, get_settings().max_image_pixels)
    context.check_cancelled()
    (result,) = audit_images(loaded, [item], params, context.scaled(0.02, 0.97))
    result.report["run_seconds"] = time.perf_counter() - started
    finish_report(result.report, context.job_id)
    report = write_artifacts(result, out_dir)
    context.progress(1.0, "done")
    logger.info(
        "job %s: audit finished, verdict %s in %.1f s",
        context.job_id,
        report["verdict"],
        report["run_seconds"],
    )
    return report
