"""``fragility submit``, ``status`` and ``batch``: client commands for a running service.

Exit status: 0 when every job succeeded and no image is fragile; 1 when a job failed, was
cancelled or found a fragile image (so a pipeline can stop on it); 2 on invalid input, an error
response or an unreachable service.
"""

from __future__ import annotations

import argparse
import json
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from fragility.cli import EXIT_FINDING, EXIT_OK, CommandError


def _add_connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the API's root URL (default FRAGILITY_API_URL, http://127.0.0.1:8000)"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON response instead")


def _add_audit_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="'builtin:NAME' or the id of a registered model"
    )
    parser.add_argument("--method", help="saliency method (default gradient)")
    parser.add_argument("--attack", help="attack (default topk)")
    parser.add_argument("--epsilon", help="L-infinity budget in [0, 1] pixel units, e.g. 8/255")
    parser.add_argument("--steps", type=int, help="attack iterations (default 100)")
    parser.add_argument("--step-size", help="step per iteration in pixel units")
    parser.add_argument("--k", type=int, help="pixels in the top-k set")
    parser.add_argument("--seed", type=int, help="seed of every random draw (default 0)")
    parser.add_argument("--params", help="JSON object with further audit parameters")


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``submit``, ``status`` and ``batch`` subcommands."""
    submit = subparsers.add_parser(
        "submit",
        help="submit an audit of one image to the service",
        description="Upload one image and queue an audit; print the job id, or with --wait "
        "follow it to the end. Exit 1 when the job failed or the image is fragile.",
    )
    submit.add_argument("image", type=Path, help="image file (PNG, JPEG, TIFF, BMP, WebP, DICOM)")
    _add_audit_params(submit)
    submit.add_argument("--wait", action="store_true", help="wait for the result, with progress")
    _add_connection(submit)
    submit.set_defaults(handler=handle_submit)

    status = subparsers.add_parser(
        "status",
        help="show a job's status",
        description="Show a job's status, progress and result. Exit 1 when it failed, was "
        "cancelled or found the image fragile.",
    )
    status.add_argument("job_id", help="the job id that submit printed")
    _add_connection(status)
    status.set_defaults(handler=handle_status)

    batch = subparsers.add_parser(
        "batch",
        help="audit every image of a folder or a zip archive through the service",
        description="Upload the images of DIR (its files, not subfolders; hidden files skipped) "
        "or of a ZIP, follow the batch with a progress bar, and print a summary table. Exit 1 "
        "when any image is fragile or any job failed.",
    )
    batch.add_argument("source", type=Path, help="folder of images, or a zip archive")
    _add_audit_params(batch)
    _add_connection(batch)
    batch.add_argument(
        "--poll", type=float, default=1.0, help="seconds between status polls (default 1)"
    )
    batch.set_defaults(handler=handle_batch)


def _client(args: argparse.Namespace):
    from fragility.client import FragilityClient
    from fragility.settings import get_settings

    return FragilityClient(args.url or get_settings().api_url)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        try:
            params = json.loads(args.params)
        except json.JSONDecodeError as error:
            raise CommandError(f"--params is not valid JSON ({error.msg})") from None
        if not isinstance(params, dict):
            raise CommandError("--params must be a JSON object")
    for name in ("method", "attack", "epsilon", "steps", "step_size", "k", "seed"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    return params


def _call(function, *args: Any, **kwargs: Any) -> Any:
    """Run a client call, turning service errors into one-line command errors."""
    from fragility.client import ApiError, ServiceUnreachableError

    try:
        return function(*args, **kwargs)
    except ApiError as error:
        field = f" (field {error.field})" if error.field else ""
        raise CommandError(
            f"the service responded {error.status_code}{field}: {error.detail}"
        ) from None
    except ServiceUnreachableError as error:
        raise CommandError(str(error)) from None


def job_exit_status(job: dict[str, Any]) -> int:
    """Return 1 for a failed or cancelled job or a fragile verdict, 0 otherwise."""
    if job["status"] in ("failed", "cancelled"):
        return EXIT_FINDING
    if (job.get("result") or {}).get("verdict") == "fragile":
        return EXIT_FINDING
    return EXIT_OK


def _describe_job(job: dict[str, Any]) -> str:
    lines = [f"job {job['id']}: {job['status']} ({job['progress']:.0%}) {job['message']}"]
    result = job.get("result") or {}
    if result:
        topk = (result.get("metrics") or {}).get("topk_intersection")
        label = result.get("label") or {}
        lines.append(
            f"verdict {result.get('verdict')}; top-k intersection {topk}; label "
            f"{label.get('original_name', label.get('original'))} -> "
            f"{label.get('perturbed_name', label.get('perturbed'))}"
        )
        if result.get("verdict_reason"):
            lines.append(str(result["verdict_reason"]))
    if job.get("error"):
        lines.append(f"error: {job['error']['type']}: {job['error']['message']}")
    return "\n".join(lines)


def handle_submit(args: argparse.Namespace) -> int:
    """Upload one image, queue an audit and optionally wait for it."""
    if not args.image.is_file():
        raise CommandError(f"image {str(args.image)!r} not found")
    with _client(args) as client:
        accepted = _call(client.submit_audit, args.image, args.model, **_params(args))
        if not args.wait:
            print(json.dumps(accepted, indent=2) if args.json else accepted["id"])
            return EXIT_OK
        from fragility.progress import ProgressBar

        with ProgressBar(f"job {accepted['id'][:8]}", disable=args.json) as bar:
            job = _call(
                client.wait,
                accepted["id"],
                on_update=lambda j: bar.update(j["progress"], j["message"]),
            )
    print(json.dumps(job, indent=2) if args.json else _describe_job(job))
    return job_exit_status(job)


def handle_status(args: argparse.Namespace) -> int:
    """Print one job's status."""
    with _client(args) as client:
        job = _call(client.job, args.job_id)
    print(json.dumps(job, indent=2) if args.json else _describe_job(job))
    return job_exit_status(job)


def _zip_names(path: Path) -> list[str]:
    """Member names the service audits, in archive order (it skips folders and hidden files)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as error:
        raise CommandError(f"{str(path)!r} is not a readable zip archive ({error})") from None
    names = []
    for info in members:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue
        names.append(info.filename)
    return names


def _batch_sources(source: Path) -> tuple[list[Path] | Path, list[str]]:
    """Return what to upload and the local name of each image, in upload order."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise CommandError(f"folder {str(source)!r} contains no files")
        return files, [p.name for p in files]
    if source.is_file() and zipfile.is_zipfile(source):
        return source, _zip_names(source)
    raise CommandError(f"{str(source)!r} is neither a folder nor a zip archive")


def _name_in_error(message: str, names: list[str]) -> str:
    """Replace a field such as files[3] or files[0][3] in an error with the local file name."""

    def local(match: re.Match[str]) -> str:
        index = int(match.group(2) or match.group(1))
        return f"{match.group(0)} ({names[index]})" if index < len(names) else match.group(0)

    return re.sub(r"files\[(\d+)\](?:\[(\d+)\])?", local, message, count=1)


def _summary_table(batch: dict[str, Any], names: list[str]) -> str:
    rows = [("#", "image", "status", "verdict", "top-k")]
    for item in batch["items"]:
        index = item["index"]
        topk = item["topk_intersection"]
        rows.append(
            (
                str(index),
                names[index] if index < len(names) else "?",
                item["status"],
                item["verdict"] or (item["error"] or "")[:40],
                f"{topk:.3f}" if topk is not None else "-",
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    aggregates = batch["aggregates"]
    verdicts = ", ".join(f"{v} {n}" for v, n in sorted(aggregates["verdicts"].items())) or "none"
    statuses = ", ".join(f"{s} {n}" for s, n in sorted(aggregates["statuses"].items()))
    lines.append("")
    lines.append(f"{batch['count']} images: {statuses}; verdicts: {verdicts}")
    topk = aggregates["topk_intersection"]
    if topk:
        lines.append(
            f"top-k intersection: mean {topk['mean']:.3f}, median {topk['median']:.3f}, "
            f"min {topk['min']:.3f}"
        )
    return "\n".join(lines)


def handle_batch(args: argparse.Namespace) -> int:
    """Upload a folder or zip of images, follow the batch and print the summary."""
    from fragility.progress import ProgressBar

    upload, names = _batch_sources(args.source)
    with _client(args) as client:
        try:
            accepted = _call(client.submit_batch, upload, args.model, **_params(args))
        except CommandError as error:
            raise CommandError(_name_in_error(str(error), names)) from None
        total = accepted["count"]
        with ProgressBar(f"batch of {total}", disable=args.json) as bar:

            def show(batch: dict[str, Any]) -> None:
                done = sum(
                    n
                    for s, n in batch["aggregates"]["statuses"].items()
                    if s in ("succeeded", "failed", "cancelled")
                )
                running = sum(i["progress"] for i in batch["items"] if i["status"] == "running")
                bar.update((done + running) / max(1, total), f"{done}/{total} done")

            batch = _call(client.wait_batch, accepted["id"], poll_s=args.poll, on_update=show)
    if args.json:
        print(json.dumps(batch, indent=2))
    else:
        print(_summary_table(batch, names))
    statuses = batch["aggregates"]["statuses"]
    fragile = batch["aggregates"]["verdicts"].get("fragile", 0)
    if fragile or statuses.get("failed") or statuses.get("cancelled"):
        return EXIT_FINDING
    return EXIT_OK
