"""Load benchmark of the service: submit latency, status reads per second, audits per minute.

Starts a private stack on loopback (redis-server with append-only persistence in a temporary
folder, `fragility serve`, and `fragility worker` processes), drives it, stops it, and prints a
Markdown table (and writes JSON with --out).

Phases:

1. Submit: N concurrent clients (N = 1, 8, 32 by default) each POST /v1/audits in a loop for
   --duration seconds (a 32x32 PNG, builtin:digits_cnn). No worker runs in this phase, so the
   figures are the API's own: validation, decoding the image, storing it, the job record and the
   Celery message.
2. Status: N clients GET /v1/jobs/{id} in a loop for --duration seconds.
3. Audits: with 1 and then 2 worker processes (one pool process each, --torch-threads torch
   threads each), --audits audits of --steps steps are submitted at once, after one warm-up
   audit per worker; audits per minute = audits / (last finish - first submission).

The load generator is a minimal HTTP/1.1 client on asyncio with one keep-alive connection per
client, so that it costs little CPU; it still shares the machine's cores with the API. Each load
phase also reports the API process's CPU time (user + system) per request, which depends less
than the latencies on other work running on the machine.

Usage:
    python bench/service_load.py [--clients 1 8 32] [--duration 5] [--audits 12] [--steps 20]
                                 [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "models" / "builtin" / "samples" / "digits_cnn_3_0649.png"
MODEL = "builtin:digits_cnn"
BOUNDARY = "fragility-bench-boundary"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout_s: float, description: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {description}")
        time.sleep(0.1)


class Stack:
    """The private redis-server, API and workers, as child processes in their own sessions."""

    def __init__(self, directory: Path, torch_threads: int) -> None:
        self.directory = directory
        self.redis_port = free_port()
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        self.env = dict(
            os.environ,
            FRAGILITY_REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            FRAGILITY_STORAGE_DIR=str(directory / "storage"),
            FRAGILITY_TORCH_THREADS=str(torch_threads),
            PYTHONUNBUFFERED="1",
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, argv: list[str]) -> None:
        log = (self.directory / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def api_cpu_seconds(self) -> float:
        """Return the CPU time (user + system) the API process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.processes['api'].pid}/stat").read_text().rsplit(")", 1)[1]
        user, system = fields.split()[11:13]
        return (int(user) + int(system)) / os.sysconf("SC_CLK_TCK")

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, decode_responses=True)

    def start_redis(self) -> None:
        self._start(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--save",
                "",
            ],
        )

        def answers() -> bool:
            try:
                return bool(self.redis().ping())
            except redis.RedisError:
                return False

        wait_until(answers, 15, "redis-server")

    def start_api(self) -> None:
        argv = [sys.executable, "-m", "fragility", "serve", "--port", str(self.api_port)]
        self._start("api", argv)

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, "the API")

    def start_workers(self, count: int) -> None:
        for index in range(count):
            argv = [
                sys.executable,
                "-m",
                "fragility",
                "worker",
                "--concurrency",
                "1",
                "--name",
                f"bench-{index}@{socket.gethostname()}",
            ]
            self._start(f"worker{index}", argv)

        def alive() -> bool:
            try:
                body = httpx.get(f"{self.url}/readyz", timeout=2).json()
            except httpx.TransportError:
                return False
            return len(body.get("workers", {}).get("gpu", [])) >= count

        wait_until(alive, 60, f"{count} worker(s)")


def multipart_audit(steps: int) -> bytes:
    """Return the body of POST /v1/audits with the bench image and ``steps``."""
    parts = []
    for name, value in (("model", MODEL), ("steps", str(steps))):
        disposition = f'Content-Disposition: form-data; name="{name}"'
        parts.append(f"--{BOUNDARY}\r\n{disposition}\r\n\r\n{value}\r\n".encode())
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="image.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + IMAGE.read_bytes()
        + b"\r\n"
    )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def raw_request(
    method: str, path: str, port: int, body: bytes = b"", content_type: str = ""
) -> bytes:
    headers = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if body:
        headers += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """Send one request on a keep-alive connection and read the response."""
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(
    port: int,
    clients: int,
    duration_s: float,
    make_request,
    on_response,
) -> list[float]:
    """Run ``clients`` connections for ``duration_s``; return every request's latency in s."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration_s

    async def client(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count = 0
        try:
            while time.perf_counter() < deadline:
                request = make_request(index, count)
                started = time.perf_counter()
                status, body = await exchange(reader, writer, request)
                latencies.append(time.perf_counter() - started)
                on_response(status, body)
                count += 1
        finally:
            writer.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def measure_submits(stack: Stack, clients: int, duration_s: float) -> tuple[dict, list[str]]:
    body = multipart_audit(steps=5)
    request = raw_request(
        "POST", "/v1/audits", stack.api_port, body, f"multipart/form-data; boundary={BOUNDARY}"
    )
    job_ids: list[str] = []
    errors = []

    def on_response(status: int, payload: bytes) -> None:
        if status == 202:
            job_ids.append(json.loads(payload)["id"])
        else:
            errors.append(status)

    cpu_before = stack.api_cpu_seconds()
    latencies = asyncio.run(
        drive(stack.api_port, clients, duration_s, lambda i, n: request, on_response)
    )
    cpu_ms = 1000 * (stack.api_cpu_seconds() - cpu_before) / max(1, len(latencies))
    return {
        "api_cpu_ms_per_request": cpu_ms,
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "per_second": len(latencies) / duration_s,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
    }, job_ids


def measure_status(stack: Stack, clients: int, duration_s: float, job_ids: list[str]) -> dict:
    requests = [raw_request("GET", f"/v1/jobs/{job_id}", stack.api_port) for job_id in job_ids]
    errors = []

    def on_response(status: int, payload: bytes) -> None:
        if status != 200:
            errors.append(status)

    cpu_before = stack.api_cpu_seconds()
    latencies = asyncio.run(
        drive(
            stack.api_port,
            clients,
            duration_s,
            lambda i, n: requests[(i * 7919 + n) % len(requests)],
            on_response,
        )
    )
    cpu_ms = 1000 * (stack.api_cpu_seconds() - cpu_before) / max(1, len(latencies))
    return {
        "api_cpu_ms_per_request": cpu_ms,
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "per_second": len(latencies) / duration_s,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p99_ms": 1000 * percentile(latencies, 99),
    }


def wait_jobs(client: httpx.Client, job_ids: list[str], timeout_s: float) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    pending = set(job_ids)
    jobs: dict[str, dict] = {}
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} audits still not final after {timeout_s} s")
        for job_id in list(pending):
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                jobs[job_id] = job
                pending.discard(job_id)
        time.sleep(0.5)
    return [jobs[job_id] for job_id in job_ids]


def submit(client: httpx.Client, steps: int) -> str:
    response = client.post(
        "/v1/audits",
        data={"model": MODEL, "steps": str(steps)},
        files={"image": ("image.png", IMAGE.read_bytes(), "image/png")},
    )
    response.raise_for_status()
    return response.json()["id"]


def measure_audits(stack: Stack, workers: int, audits: int, steps: int) -> dict:
    stack.start_workers(workers)
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            warmup = [submit(client, steps) for _ in range(workers)]
            wait_jobs(client, warmup, 300)
            started = time.time()
            job_ids = [submit(client, steps) for _ in range(audits)]
            jobs = wait_jobs(client, job_ids, 1800)
    finally:
        for index in range(workers):
            stack.stop(f"worker{index}")
    finished = max(datetime.fromisoformat(job["finished_at"]).timestamp() for job in jobs)
    elapsed = finished - started
    failed = sum(job["status"] != "succeeded" for job in jobs)
    return {
        "workers": workers,
        "audits": audits,
        "steps": steps,
        "failed": failed,
        "seconds": elapsed,
        "audits_per_minute": 60 * audits / elapsed,
    }


def markdown(results: dict) -> str:
    lines = [
        "| clients | submit p50 (ms) | submit p99 (ms) | submits/s | API CPU/submit (ms) | "
        "status p50 (ms) | status p99 (ms) | status reads/s | API CPU/read (ms) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for submit_row, status_row in zip(results["submit"], results["status"], strict=True):
        lines.append(
            f"| {submit_row['clients']} | {submit_row['p50_ms']:.1f} | {submit_row['p99_ms']:.1f} "
            f"| {submit_row['per_second']:.0f} | {submit_row['api_cpu_ms_per_request']:.2f} "
            f"| {status_row['p50_ms']:.2f} | {status_row['p99_ms']:.2f} "
            f"| {status_row['per_second']:.0f} | {status_row['api_cpu_ms_per_request']:.2f} |"
        )
    lines += [
        "",
        "| workers | audits | steps | seconds | audits/min |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["audits"]:
        lines.append(
            f"| {row['workers']} | {row['audits']} | {row['steps']} | {row['seconds']:.1f} | "
            f"{row['audits_per_minute']:.1f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase")
    parser.add_argument("--audits", type=int, default=12, help="audits per worker count")
    parser.add_argument("--steps", type=int, default=20, help="attack steps per audit")
    parser.add_argument(
        "--workers", type=int, nargs="*", default=[1, 2], help="worker counts; none skips phase 3"
    )
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed")

    directory = Path(tempfile.mkdtemp(prefix="fragility-bench-"))
    stack = Stack(directory, args.torch_threads)
    results: dict = {
        "machine": {
            "load_average_at_start": os.getloadavg(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "submit": [],
        "status": [],
        "audits": [],
    }
    try:
        stack.start_redis()
        stack.start_api()
        job_ids: list[str] = []
        for clients in args.clients:
            row, ids = measure_submits(stack, clients, args.duration)
            results["submit"].append(row)
            job_ids += ids
            print(f"submit  {row}", file=sys.stderr)
        for clients in args.clients:
            row = measure_status(stack, clients, args.duration, job_ids)
            results["status"].append(row)
            print(f"status  {row}", file=sys.stderr)
        # Drop the queued load-test jobs so that the workers start on an empty queue.
        stack.redis().flushdb()
        for workers in args.workers:
            row = measure_audits(stack, workers, args.audits, args.steps)
            results["audits"].append(row)
            print(f"audits  {row}", file=sys.stderr)
    finally:
        stack.stop_all()
        shutil.rmtree(directory, ignore_errors=True)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    print(markdown(results))
    start, end = (
        results["machine"]["load_average_at_start"],
        results["machine"]["load_average_at_end"],
    )
    print(f"\n1-minute load average: {start[0]:.1f} at start, {end[0]:.1f} at end")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
