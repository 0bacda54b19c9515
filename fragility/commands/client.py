"""``fragility submit``, ``status``, ``batch`` and ``cancel``: client commands for a service.

Submit, status and batch exit with the status GATE_RULE states. They fail closed, like
``fragility audit --fail-on-fragile``, so a QA gate stops on every image whose robustness the
audit did not establish. ``cancel`` has its own exit status, given in its help.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from fragility.cli import EXIT_FINDING, EXIT_OK, CommandError

# File extensions that `fragility batch DIR` uploads. It skips other files (notes, DICOMDIR).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dcm")

# The exit status rule of submit, status and batch, shown in their help.
GATE_RULE = (
    "Exit 0 when every job succeeded and every image is robust. Exit 1 when any image is "
    "fragile or inconclusive (the audit could not establish robustness), or when any job failed "
    "or was cancelled. Exit 2 on invalid input or a service error."
)


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
    """Add the ``submit``, ``status``, ``batch`` and ``cancel`` subcommands."""
    submit = subparsers.add_parser(
        "submit",
        help="submit an audit of one image to the service",
        description="Upload one image and queue an audit. Print the job id, or with --wait "
        f"follow the job to the end and apply the gate rule. {GATE_RULE}",
    )
    submit.add_argument("image", type=Path, help="image file (PNG, JPEG, TIFF, BMP, WebP, DICOM)")
    _add_audit_params(submit)
    submit.add_argument("--wait", action="store_true", help="wait for the result, with progress")
    _add_connection(submit)
    submit.set_defaults(handler=handle_submit)

    status = subparsers.add_parser(
        "status",
        help="show a job's status",
        description=f"Show a job's status, progress and result. {GATE_RULE}",
    )
    status.add_argument("job_id", help="the job id that submit printed")
    _add_connection(status)
    status.set_defaults(handler=handle_status)

    batch = subparsers.add_parser(
        "batch",
        help="audit every image of a folder or a zip archive through the service",
        description="Upload the images of DIR (its files with an image extension, "
        f"{' '.join(IMAGE_EXTENSIONS)}, not subfolders; other and hidden files are skipped) or "
        "of a ZIP, follow the batch with a progress bar, and print the batch id and a summary "
        f"table. {GATE_RULE}",
    )
    batch.add_argument("source", type=Path, help="folder of images, or a zip archive")
    _add_audit_params(batch)
    _add_connection(batch)
    batch.add_argument(
        "--poll", type=float, default=1.0, help="seconds between status polls (default 1)"
    )
    batch.set_defaults(handler=handle_batch)

    cancel = subparsers.add_parser(
        "cancel",
        help="cancel a job",
        description="Cancel a job: a queued job never starts, a running one stops at its next "
        "step. Exit 0 when the job is cancelled or cancelling, 1 when it had already succeeded "
        "or failed, 2 when it is not found or the service cannot be reached.",
    )
    cancel.add_argument("job_id", help="the job id that submit printed")
    _add_connection(cancel)
    cancel.set_defaults(handler=handle_cancel)


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


def _call(function, *args: Any, conflict_ok: bool = False, **kwargs: Any) -> Any:
    """Run a client call, turning service errors into one-line command errors.

    With ``conflict_ok`` a 409 response is re-raised as the client's ApiError.
    """
    from fragility.client import ApiError, ServiceUnreachableError

    try:
        return function(*args, **kwargs)
    except ApiError as error:
        if conflict_ok and error.status_code == 409:
            raise
        field = f" (field {error.field})" if error.field else ""
        raise CommandError(
            f"the service responded {error.status_code}{field}: {error.detail}"
        ) from None
    except ServiceUnreachableError as error:
        raise CommandError(str(error)) from None


def job_exit_status(job: dict[str, Any]) -> int:
    """Return 0 for a succeeded job whose verdict, if any, is robust, and 1 otherwise.

    The rule fails closed, so a succeeded audit job without a verdict also returns 1.
    """
    if job["status"] != "succeeded":
        return EXIT_FINDING
    verdict = (job.get("result") or {}).get("verdict")
    if (job.get("type") == "audit" or verdict is not None) and verdict != "robust":
        return EXIT_FINDING
    return EXIT_OK


def _describe_job(job: dict[str, Any]) -> str:
    line = f"job {job['id']}: {job['status']} ({job['progress']:.0%})"
    if job.get("message") and job["message"] != job["status"]:
        line += f": {job['message']}"
    lines = [line]
    result = job.get("result") or {}
    if result:
        topk = (result.get("metrics") or {}).get("topk_intersection")
        label = result.get("label") or {}
        topk_text = f"{topk:.2f}" if isinstance(topk, int | float) else "-"
        lines.append(
            f"verdict {result.get('verdict')}; top-k intersection {topk_text}; label "
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

        with ProgressBar(f"job {accepted['id']}", disable=args.json) as bar:
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


def handle_cancel(args: argparse.Namespace) -> int:
    """Cancel one job; exit 0 when cancelled, 1 when it already finished, 2 when not found."""
    from fragility.client import ApiError

    with _client(args) as client:
        try:
            outcome = _call(client.cancel, args.job_id, conflict_ok=True)
        except ApiError as error:
            # 409: the job already succeeded or failed, so there is nothing to cancel.
            print(f"fragility cancel: {error.detail}", file=sys.stderr)
            return EXIT_FINDING
    if args.json:
        print(json.dumps(outcome, indent=2))
    else:
        print(f"job {outcome['id']}: {outcome['outcome'].replace('_', ' ')}")
    return EXIT_OK


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


def _folder_images(folder: Path) -> list[Path]:
    """Return the folder's image files by name, and report the other files it skips on stderr.

    Hidden files are skipped silently, as the service skips them in a zip.
    """
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped = [p.name for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
    extensions = " ".join(IMAGE_EXTENSIONS)
    if skipped:
        listed = ", ".join(skipped[:5])
        if len(skipped) > 5:
            listed += f" and {len(skipped) - 5} more"
        print(
            f"fragility batch: skipped {len(skipped)} file(s) without an image extension "
            f"({extensions}): {listed}",
            file=sys.stderr,
        )
    if not images:
        raise CommandError(
            f"folder {str(folder)!r} contains no image files (extensions {extensions}), and "
            f"{len(skipped)} other file(s) were skipped. Give DICOM files without an extension "
            "the extension .dcm"
        )
    return images


def _batch_sources(source: Path) -> tuple[list[Path] | Path, list[str]]:
    """Return what to upload and the local name of each image, in upload order."""
    if source.is_dir():
        files = _folder_images(source)
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
    lines = [f"batch {batch['id']} (GET /v1/batches/{batch['id']})", ""]
    lines += [
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
    return batch_exit_status(batch)


def batch_exit_status(batch: dict[str, Any]) -> int:
    """Return 0 when every job succeeded with a robust verdict, 1 otherwise (fail closed)."""
    for item in batch["items"]:
        if item["status"] != "succeeded" or item["verdict"] != "robust":
            return EXIT_FINDING
    return EXIT_OK
