"""The ``fragility`` command line.

Each module in ``fragility.commands`` adds one or more subcommands through
``add_parsers(subparsers)`` and sets ``handler`` on its parsers; a handler returns the exit status.
Modules are imported at start-up, so they must import torch, FastAPI and Celery lazily, inside
their handlers: ``fragility status`` should not pay for importing torch.

Exit status: 0 on success and 2 on invalid input or any error. 1 means the work ran and found
something a pipeline should stop on: a failed or cancelled job, or an image that is not robust
(fragile or inconclusive) where the command gates on it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import fragility.commands
from fragility import __version__

EXIT_OK = 0
EXIT_FINDING = 1
EXIT_ERROR = 2


class CommandError(Exception):
    """An error the command line reports as one line on stderr with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with every subcommand found in ``fragility.commands``."""
    parser = argparse.ArgumentParser(
        prog="fragility",
        description="Audit whether an image classifier's saliency maps survive small "
        "label-preserving perturbations, and run the related analyses.",
    )
    parser.add_argument("--version", action="version", version=f"fragility {__version__}")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of log lines written to stderr (default WARNING)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_info in sorted(
        pkgutil.iter_modules(fragility.commands.__path__), key=lambda m: m.name
    ):
        module = importlib.import_module(f"fragility.commands.{module_info.name}")
        module.add_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args))
    except CommandError as error:
        print(f"fragility {args.command}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"fragility {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
