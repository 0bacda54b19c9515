"""Processes of a private service stack and helpers that drive it over HTTP."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "models" / "builtin" / "samples").glob("digits_cnn_*.png"))
MODEL = "builtin:digits_cnn"
MAX_UPLOAD_BYTES = 200_000
MAX_BATCH_IMAGES = 25
JOB_TIMEOUT_S = 120.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any], timeout_s: float, description: str, interval_s: float = 0.05
) -> Any:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Raises:
        TimeoutError: naming ``description`` when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {description}")
        time.sleep(interval_s)


def log_tail(path: Path, lines: int = 30) -> str:
    """Return the last lines of a process log, for assertion messages."""
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Process:
    """A child process in its own session, so that stopping it also stops its children."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            start_new_session=True,
        )
        handle.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL the process and everything in its session, and reap it."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def children(self) -> list[int]:
        """Return the pids of the direct children of the process."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []


class RedisServer:
    """A private redis-server with append-only persistence, restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ]
        self.process = Process("redis", argv, dict(os.environ), directory / "redis.log")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
            return False

    def start(self) -> None:
        self.process.start()
        wait_until(self._answers, 15, "redis-server to answer PING")

    def stop(self) -> None:
        self.process.kill()


class Api:
    """`fragility serve` on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "fragility", "serve", "--port", str(self.port)]
        self.process = Process("api", argv, env, log)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def start(self) -> None:
        self.process.start()
        wait_until(self._healthy, 30, f"the API to answer /healthz; log:\n{self.process.log}")

    def stop(self) -> None:
        self.process.kill()


def submit_audit(http: httpx.Client, image: Path, **params: Any) -> str:
    """POST one audit and return the job id (asserting the 202)."""
    form = {"model": MODEL, **{name: str(value) for name, value in params.items()}}
    files = {"image": ("image.png", image.read_bytes(), "image/png")}
    response = http.post("/v1/audits", data=form, files=files)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def get_job(http: httpx.Client, job_id: str) -> dict:
    response = http.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_job(http: httpx.Client, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """Poll a job until it has a final status and return it."""

    def final() -> dict | None:
        job = get_job(http, job_id)
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(final, timeout_s, f"job {job_id} to finish", interval_s=0.2)


def wait_running(http: httpx.Client, job_id: str, min_progress: float = 0.0) -> dict:
    """Poll a job until it runs with progress above ``min_progress`` and return it."""

    def running() -> dict | None:
        job = get_job(http, job_id)
        assert job["status"] in ("queued", "running"), job
        return job if job["status"] == "running" and job["progress"] > min_progress else None

    return wait_until(running, JOB_TIMEOUT_S, f"job {job_id} to run", interval_s=0.05)


def finished_total(store: redis.Redis, status: str, job_type: str = "audit") -> int:
    """Return the store's counter of jobs that reached ``status``."""
    return int(store.hget("fragility:jobs_finished", f"{job_type}|{status}") or 0)


def run_cli(api: Api, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fragility ARGS`` against the stack's API and capture its output."""
    env = dict(os.environ, FRAGILITY_API_URL=api.url)
    return subprocess.run(
        [sys.executable, "-m", "fragility", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
