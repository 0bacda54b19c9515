"""The importable client and the `fragility submit`, `status` and `batch` commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest

from fragility.client import ApiError, FragilityClient, ServiceUnreachableError

from .stack import MODEL, ROOT, SAMPLES, free_port

pytestmark = pytest.mark.service


def run_cli(api, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FRAGILITY_API_URL=api.url)
    return subprocess.run(
        [sys.executable, "-m", "fragility", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def test_client_audit_and_artifact(http, api, tmp_path):
    with FragilityClient(api.url) as client:
        assert client.ready()
        accepted = client.submit_audit(SAMPLES[11], model=MODEL, steps=5, epsilon="8/255")
        job = client.wait(accepted["id"], poll_s=0.2, timeout_s=120)
        assert job["status"] == "succeeded"
        names = [artifact["name"] for artifact in client.artifacts(job["id"])]
        assert "report.json" in names
        path = client.download_artifact(job["id"], "report.json", tmp_path / "report.json")
        assert json.loads(path.read_text())["verdict"] == job["result"]["verdict"]
        with pytest.raises(ApiError) as raised:
            client.submit_audit(SAMPLES[0], model="builtin:nope")
        assert raised.value.status_code == 422
        assert raised.value.field == "model"


def test_submit_wait_exit_status(http, api):
    result = run_cli(
        api, "submit", str(SAMPLES[12]), "--model", MODEL, "--steps", "5", "--wait", "--json"
    )
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded", result.stderr
    expected = 1 if job["result"]["verdict"] == "fragile" else 0
    assert result.returncode == expected

    status = run_cli(api, "status", job["id"])
    assert status.returncode == expected
    assert job["id"] in status.stdout
    assert f"verdict {job['result']['verdict']}" in status.stdout


def test_submit_without_wait_prints_id(http, api):
    result = run_cli(api, "submit", str(SAMPLES[13]), "--model", MODEL, "--steps", "5")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert len(job_id) == 32
    assert http.get(f"/v1/jobs/{job_id}").status_code == 200


def test_batch_command(http, api, tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for path in SAMPLES[14:17]:
        shutil.copy(path, folder / path.name)
    (folder / ".hidden").write_text("skipped")
    result = run_cli(
        api, "batch", str(folder), "--model", MODEL, "--steps", "5", "--poll", "0.3", "--json"
    )
    batch = json.loads(result.stdout)
    assert batch["count"] == 3
    fragile = batch["aggregates"]["verdicts"].get("fragile", 0)
    failed = batch["aggregates"]["statuses"].get("failed", 0)
    assert result.returncode == (1 if fragile or failed else 0), result.stderr

    table = run_cli(api, "batch", str(folder), "--model", MODEL, "--steps", "5", "--poll", "0.3")
    assert table.returncode == result.returncode
    for path in SAMPLES[14:17]:
        assert path.name in table.stdout
    assert "top-k intersection: mean" in table.stdout


def test_batch_command_names_bad_file(http, api, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(SAMPLES[0], folder / "a.png")
    (folder / "b-notes.txt").write_text("not an image")
    result = run_cli(api, "batch", str(folder), "--model", MODEL)
    assert result.returncode == 2
    assert "b-notes.txt" in result.stderr
    assert "422" in result.stderr


def test_unreachable_service_exit_2(tmp_path):
    env = dict(os.environ, FRAGILITY_API_URL=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run(
        [sys.executable, "-m", "fragility", "status", "0" * 32],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "could not reach the service" in result.stderr


def flaky_service(failures: list[str], final: dict) -> httpx.MockTransport:
    """A stand-in for the API that fails the first polls as listed, then returns ``final``.

    Each entry of ``failures`` is "refused" (no connection) or an HTTP status such as "503".
    """
    pending = list(failures)

    def handle(request: httpx.Request) -> httpx.Response:
        if pending:
            failure = pending.pop(0)
            if failure == "refused":
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(int(failure), json={"detail": "restarting", "field": None})
        return httpx.Response(200, json=final)

    return httpx.MockTransport(handle)


# The mock transport handles every request itself, so nothing is sent to this address.
MOCK_URL = "http://127.0.0.1:9"
JOB = {"id": "a" * 32, "status": "succeeded", "progress": 1.0, "message": "done"}
BATCH = {"id": "b" * 32, "done": True, "items": []}


@pytest.mark.parametrize(
    ("method", "final"), [("wait", JOB), ("wait_batch", BATCH)], ids=["job", "batch"]
)
def test_wait_retries_failed_polls(method, final):
    transport = flaky_service(["refused", "503", "502"], final)
    with FragilityClient(MOCK_URL, transport=transport) as client:
        result = getattr(client, method)(final["id"], poll_s=0.01, retry_s=30)
    assert result == final


@pytest.mark.parametrize(
    ("failure", "error"), [("refused", ServiceUnreachableError), ("503", ApiError)]
)
def test_wait_gives_up_after_retry_time(failure, error):
    transport = flaky_service([failure] * 1000, JOB)
    with (
        FragilityClient(MOCK_URL, transport=transport) as client,
        pytest.raises(error),
    ):
        client.wait(JOB["id"], poll_s=0.01, retry_s=0.3)


def test_wait_does_not_retry_not_found():
    transport = flaky_service(["404"], JOB)
    with (
        FragilityClient(MOCK_URL, transport=transport) as client,
        pytest.raises(ApiError) as raised,
    ):
        client.wait(JOB["id"], poll_s=0.01, retry_s=30)
    assert raised.value.status_code == 404
