"""``fragility run TYPE``: run any registered job type in-process, without the service."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from fragility.cli import EXIT_OK, CommandError
from fragility.progress import ProgressBar

logger = logging.getLogger(__name__)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run",
        help="run an analysis (a registered job type) in-process",
        description="Run one job type in-process and write result.json and its artifacts to "
        "--out. `fragility run --list` shows the job types.",
    )
    parser.add_argument("job_type", nargs="?", help="job type name, for example hessian_benchmark")
    parser.add_argument(
        "--params",
        default="{}",
        help="parameters as a JSON object, or the path of a JSON file (default {})",
    )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        type=Path,
        help="input file of the job, for job types that take one (repeatable)",
    )
    parser.add_argument("--out", type=Path, help="output directory (created if missing)")
    parser.add_argument("--list", action="store_true", help="list job types and exit")
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=handle_run)


def read_params(text: str) -> dict:
    """Parse --params: a JSON object, or the path of a file holding one."""
    candidate = Path(text)
    if not text.lstrip().startswith("{") and candidate.is_file():
        text = candidate.read_text(encoding="utf-8")
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise CommandError(
            f"--params is neither a JSON object nor an existing JSON file ({error.msg} at "
            f"position {error.pos}); give for example --params '{{\"sizes\": [10, 100]}}'"
        ) from None
    if not isinstance(params, dict):
        raise CommandError(f"--params must be a JSON object, got {type(params).__name__}")
    return params


def format_validation_error(error: ValidationError) -> str:
    """Render pydantic errors as 'field: message (got value)' items on one line."""
    items = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        text = f"{location}: {message}" if location else message
        if location and not isinstance(item.get("input"), dict) and "got" not in message:
            text += f" (got {item.get('input')!r})"
        items.append(text)
    return "; ".join(items)


def handle_run(args: argparse.Namespace) -> int:
    """Validate the parameters, run the job type and write result.json."""
    from worker.jobs import JOB_TYPES, get_job_type

    if args.list or not args.job_type:
        for name, job_type in sorted(JOB_TYPES.items()):
            print(f"{name:24s} {job_type.description}")
        return EXIT_OK
    if args.out is None:
        raise CommandError("--out DIR is required: the directory for result.json and artifacts")
    try:
        job_type = get_job_type(args.job_type)
    except ValueError as error:
        raise CommandError(str(error)) from None
    try:
        params = job_type.params_model.model_validate(read_params(args.params))
    except ValidationError as error:
        raise CommandError(f"invalid parameters: {format_validation_error(error)}") from None
    expected_inputs = 1 if job_type.input_files == "one" else 0
    if len(args.input) != expected_inputs:
        raise CommandError(
            f"job type {job_type.name!r} takes {expected_inputs} --input file(s), "
            f"got {len(args.input)}"
        )
    for path in args.input:
        if not path.is_file():
            raise CommandError(f"--input {str(path)!r} not found")

    args.out.mkdir(parents=True, exist_ok=True)
    runner = job_type.load_runner()
    started = time.perf_counter()
    with ProgressBar(job_type.name, disable=args.quiet) as bar:
        try:
            result = runner(params, list(args.input), args.out, bar.context())
        except ValueError as error:
            raise CommandError(str(error)) from None
    result_path = args.out / "result.json"
    result_path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    elapsed = time.perf_counter() - started
    summary = result.get("summary") if isinstance(result, dict) else None
    if summary:
        print(summary if isinstance(summary, str) else "\n".join(summary))
    print(f"{job_type.name}: done in {elapsed:.1f} s; result in {result_path}", file=sys.stdout)
    return EXIT_OK
