"""``fragility serve`` and ``fragility worker``: run the HTTP API and the Celery workers."""

from __future__ import annotations

import argparse
import logging
import socket

from fragility.cli import EXIT_OK, CommandError

logger = logging.getLogger(__name__)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` and ``worker`` subcommands."""
    serve = subparsers.add_parser(
        "serve",
        help="run the HTTP API (FastAPI under uvicorn)",
        description="Run the HTTP API. Settings come from FRAGILITY_* environment variables "
        "(see docs/service.md); --host and --port override FRAGILITY_API_HOST and "
        "FRAGILITY_API_PORT.",
    )
    serve.add_argument("--host", help="address to bind (default FRAGILITY_API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default FRAGILITY_API_PORT)")
    serve.add_argument(
        "--access-log", action="store_true", help="log every request line (off by default)"
    )
    serve.set_defaults(handler=handle_serve)

    worker = subparsers.add_parser(
        "worker",
        help="run a Celery worker that executes jobs",
        description="Run a Celery worker on the Redis broker of FRAGILITY_REDIS_URL. With the "
        "prefork pool (default) torch is imported only in the forked worker processes, so CUDA "
        "starts after the fork.",
    )
    worker.add_argument(
        "--queues",
        help="comma-separated queues to consume, for example cpu or gpu "
        "(default FRAGILITY_WORKER_QUEUES, cpu,gpu)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        help="worker processes, each running one job at a time "
        "(default FRAGILITY_WORKER_CONCURRENCY, 1)",
    )
    worker.add_argument(
        "--pool",
        choices=["prefork", "solo"],
        help="Celery pool (default FRAGILITY_WORKER_POOL, prefork)",
    )
    worker.add_argument(
        "--name", help="worker node name (default fragility-PID@HOSTNAME, unique per process)"
    )
    worker.set_defaults(handler=handle_worker)


def handle_serve(args: argparse.Namespace) -> int:
    """Run uvicorn with the API until interrupted."""
    import uvicorn

    from fragility.settings import get_settings

    settings = get_settings()
    level = min(logging.getLogger().level, logging.INFO)
    logging.getLogger().setLevel(level)
    host = args.host or settings.api_host
    port = args.port or settings.api_port
    # Import here so that a broken setting is reported before uvicorn starts.
    from app.main import app

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=logging.getLevelName(level).lower(),
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    return EXIT_OK


def handle_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker until it is stopped (SIGTERM for a warm shutdown)."""
    import os

    from fragility.settings import get_settings

    settings = get_settings()
    queues = args.queues or ",".join(settings.worker_queues)
    concurrency = args.concurrency or settings.worker_concurrency
    pool = args.pool or settings.worker_pool
    if concurrency < 1:
        raise CommandError(f"--concurrency must be at least 1, got {concurrency}")
    if not queues.strip(","):
        raise CommandError("--queues must name at least one queue, for example cpu,gpu")
    name = args.name or f"fragility-{os.getpid()}@{socket.gethostname()}"

    from worker.celery_app import celery_app

    # Services log their starts, stops and every job at INFO, or more with --log-level DEBUG.
    level = min(logging.getLogger().level, logging.INFO)
    logging.getLogger().setLevel(level)
    argv = [
        "worker",
        f"--loglevel={logging.getLevelName(level)}",
        f"--queues={queues}",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--hostname={name}",
        # Gossip and mingle synchronise worker state over broadcast messages; jobs need neither,
        # and mingle delays start-up by a second or more.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    celery_app.worker_main(argv)
    return EXIT_OK
