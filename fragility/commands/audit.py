"""``fragility audit IMAGE... --model REF --out DIR``: the fragility audit, run in-process."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fragility.cli import EXIT_FINDING, EXIT_OK, CommandError
from fragility.commands.run import format_validation_error
from fragility.progress import ProgressBar

logger = logging.getLogger(__name__)

# CLI option -> AuditParams field, for the options passed through unchanged.
PARAM_OPTIONS = {
    "model": "model",
    "method": "method",
    "attack": "attack",
    "epsilon": "epsilon",
    "steps": "steps",
    "step_size": "step_size",
    "k": "k",
    "seed": "seed",
    "signed": "signed",
    "ig_steps": "ig_steps",
    "ig_baseline": "ig_baseline",
    "smoothgrad_samples": "smoothgrad_samples",
    "smoothgrad_noise": "smoothgrad_noise",
    "surrogate_beta": "surrogate_beta",
    "target_box": "target_box",
    "gamma": "manipulate_gamma",
    "fragile_threshold": "fragile_threshold",
    "device": "device",
}


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand."""
    parser = subparsers.add_parser(
        "audit",
        help="audit images against a label-preserving attack on the saliency map",
        description="Compute each image's saliency map, attack it within an L-infinity budget "
        "while keeping the predicted label, compare with a random-sign perturbation of the same "
        "size, and write a report per image to OUT/<image stem>/.",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument(
        "--model", required=True, help="'builtin:NAME' or the path of a JSON model spec"
    )
    parser.add_argument(
        "--method",
        default="gradient",
        help="saliency method: gradient, gradient_x_input, integrated_gradients or smoothgrad "
        "(default gradient)",
    )
    parser.add_argument(
        "--attack",
        default="topk",
        help="attack: topk, center_of_mass, targeted, manipulate or random (default topk)",
    )
    parser.add_argument(
        "--epsilon",
        default="8/255",
        help="L-infinity budget in [0, 1] pixel units; fractions allowed (default 8/255)",
    )
    parser.add_argument("--steps", type=int, default=100, help="attack iterations (default 100)")
    parser.add_argument(
        "--step-size", help="step per iteration in pixel units (default epsilon/16)"
    )
    parser.add_argument("--k", type=int, help="top-k size in pixels (default 2%% of the pixels)")
    parser.add_argument("--seed", type=int, default=0, help="seed of all random draws (default 0)")
    parser.add_argument(
        "--signed", action="store_true", help="sum signed attributions instead of absolute values"
    )
    parser.add_argument(
        "--ig-steps", type=int, default=50, help="integrated-gradients points (default 50)"
    )
    parser.add_argument(
        "--ig-baseline",
        default="black",
        help="integrated-gradients baseline: black, mean or white (default black)",
    )
    parser.add_argument(
        "--smoothgrad-samples", type=int, default=16, help="SmoothGrad samples (default 16)"
    )
    parser.add_argument(
        "--smoothgrad-noise",
        type=float,
        default=0.15,
        help="SmoothGrad noise std in pixel units (default 0.15)",
    )
    parser.add_argument(
        "--surrogate-beta",
        type=float,
        default=10.0,
        help="softplus beta of the attack's smooth surrogate (default 10)",
    )
    parser.add_argument(
        "--target-box",
        type=int,
        nargs=4,
        metavar=("TOP", "LEFT", "BOTTOM", "RIGHT"),
        help="target region in model-input pixels, for the targeted and manipulate attacks",
    )
    parser.add_argument(
        "--target-mask",
        type=Path,
        help="target region as an image (non-zero pixels inside), resized to the model input",
    )
    parser.add_argument(
        "--gamma",
        type=float,
        default=1.0,
        help="weight of the output term of the manipulate attack (default 1)",
    )
    parser.add_argument(
        "--fragile-threshold",
        type=float,
        default=0.5,
        help="verdict 'fragile' below this top-k intersection (default 0.5)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu or cuda (default auto: CUDA when available)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="images attacked together (default 8)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--fail-on-fragile",
        action="store_true",
        help="exit with status 1 when any image is fragile or inconclusive (for pipelines)",
    )
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=handle_audit)


def build_params(args: argparse.Namespace) -> Any:
    """Validate the options into AuditParams, raising CommandError on the first problem."""
    from worker.audit.params import AuditParams

    values = {field: getattr(args, option) for option, field in PARAM_OPTIONS.items()}
    values = {key: value for key, value in values.items() if value is not None}
    try:
        context = {"target_mask": args.target_mask is not None}
        return AuditParams.model_validate(values, context=context)
    except ValidationError as error:
        raise CommandError(f"invalid option: {format_validation_error(error)}") from None


def unique_output_dirs(images: list[Path], out: Path) -> list[Path]:
    """OUT/<stem> for each image, with -2, -3, ... appended when stems repeat."""
    seen: dict[str, int] = {}
    dirs = []
    for image in images:
        count = seen.get(image.stem, 0) + 1
        seen[image.stem] = count
        dirs.append(out / (image.stem if count == 1 else f"{image.stem}-{count}"))
    return dirs


def load_target_mask(path: Path, size: tuple[int, int]) -> Any:
    """Read a mask image: pixels above half the maximum are inside; resized to ``size``."""
    import numpy as np

    from worker.audit.images import load_image, resize_pixels

    decoded = load_image(path)
    gray = decoded.pixels.mean(axis=2, keepdims=True)
    resized = resize_pixels(gray, size)[:, :, 0]
    mask = (resized > 0.5 * resized.max()).astype(np.float32) if resized.max() > 0 else resized
    if mask.sum() == 0:
        raise CommandError(f"--target-mask {str(path)!r} has no non-zero pixels")
    return mask


def summary_line(name: str, report: dict, report_path: Path) -> str:
    """Format one line per image: verdict, label, top-k intersection against the baseline, norms."""
    label = report["label"]
    label_status = "kept" if label["preserved"] else "CHANGED"
    return (
        f"{name}: {report['verdict']:12s} label {label['original_name']}->"
        f"{label['perturbed_name']} ({label_status})  "
        f"top-k ∩ {report['metrics']['topk_intersection']:.2f}"
        f" (random {report['baseline']['metrics']['topk_intersection']:.2f})  "
        f"spearman {report['metrics']['spearman']:.2f}  "
        f"linf {report['perturbation']['linf'] * 255:.1f}/255  -> {report_path}"
    )


def handle_audit(args: argparse.Namespace) -> int:
    """Validate everything, then audit the images in batches and write the reports."""
    params = build_params(args)
    if args.batch_size < 1:
        raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
    for image in args.images:
        if image.is_dir():
            raise CommandError(
                f"{str(image)!r} is a directory; give image files, for example {image}/*.png"
            )
        if not image.is_file():
            raise CommandError(f"image {str(image)!r} not found")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CommandError(
            f"--out {str(args.out)!r} cannot be used as the output directory "
            f"({error.strerror}); give a writable directory path"
        ) from None

    from fragility.settings import get_settings
    from models.spec import ModelSpecError
    from worker.audit.artifacts import write_artifacts
    from worker.audit.audit import audit_images, check_k, resolve_device
    from worker.audit.images import ImageError
    from worker.audit.job import finish_report, prepare_input

    try:
        from models.loading import load_model

        loaded = load_model(params.model, device=resolve_device(params.device))
    except (ModelSpecError, ValueError) as error:
        raise CommandError(str(error)) from None
    size = (loaded.spec.input_size[0], loaded.spec.input_size[1])
    if params.k is not None:
        try:
            check_k(params.k, size)
        except ValueError as error:
            raise CommandError(str(error)) from None
    target_mask = load_target_mask(args.target_mask, size) if args.target_mask else None
    if (
        params.attack in ("targeted", "manipulate")
        and target_mask is None
        and not params.target_box
    ):
        raise CommandError(f"attack {params.attack!r} needs --target-box or --target-mask")

    # Decode every image before any attack starts, so a bad file stops the run at once.
    max_pixels = get_settings().max_image_pixels
    items = []
    for image in args.images:
        try:
            items.append(prepare_input(image, loaded, max_pixels))
        except ImageError as error:
            raise CommandError(str(error)) from None

    out_dirs = unique_output_dirs(args.images, args.out)
    fragile_or_inconclusive = 0
    started = time.perf_counter()
    batches = [
        list(range(start, min(start + args.batch_size, len(items))))
        for start in range(0, len(items), args.batch_size)
    ]
    disable_bar = args.quiet or not sys.stderr.isatty()
    with ProgressBar(f"audit ({len(items)} images)", disable=disable_bar) as bar:
        context = bar.context()
        for number, batch in enumerate(batches):
            share = context.scaled(number / len(batches), (number + 1) / len(batches))
            try:
                results = audit_images(
                    loaded, [items[i] for i in batch], params, share, target_mask
                )
            except ValueError as error:
                raise CommandError(str(error)) from None
            for i, result in zip(batch, results, strict=True):
                finish_report(result.report, "local")
                report = write_artifacts(result, out_dirs[i])
                if report["verdict"] != "robust":
                    fragile_or_inconclusive += 1
                print(summary_line(args.images[i].stem, report, out_dirs[i] / "report.json"))
                sys.stdout.flush()
    elapsed = time.perf_counter() - started
    print(
        f"audited {len(items)} image(s) in {elapsed:.1f} s; "
        f"{fragile_or_inconclusive} not robust; reports in {args.out}"
    )
    if args.fail_on_fragile and fragile_or_inconclusive:
        return EXIT_FINDING
    return EXIT_OK
