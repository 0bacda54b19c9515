"""The importable client and the `fragility submit`, `status` and `batch` commands."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import httpx
import pytest

from fragility.cli import build_parser
from fragility.client import ApiError, FragilityClient, ServiceUnreachableError
from fragility.commands.client import batch_exit_status, job_exit_status

from .stack import MODEL, ROOT, SAMPLES, free_port, run_cli

pytestmark = pytest.mark.service


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
    expected = 0 if job["result"]["verdict"] == "robust" else 1
    assert result.returncode == expected

    status = run_cli(api, "status", job["id"])
    assert status.returncode == expected
    lines = status.stdout.splitlines()
    assert lines[0] == f"job {job['id']}: succeeded (100%)"
    topk = job["result"]["metrics"]["topk_intersection"]
    assert f"verdict {job['result']['verdict']}; top-k intersection {topk:.2f};" in lines[1]


def test_submit_wait_prints_full_id(http, api):
    result = run_cli(api, "submit", str(SAMPLES[18]), "--model", MODEL, "--steps", "5", "--wait")
    assert result.returncode in (0, 1), result.stderr
    match = re.match(r"job ([0-9a-f]{32}): succeeded \(100%\)$", result.stdout.splitlines()[0])
    assert match, result.stdout
    status = run_cli(api, "status", match.group(1))
    assert status.returncode == result.returncode, status.stderr
    assert status.stdout == result.stdout


ROBUST = {"verdict": "robust"}


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ({"type": "audit", "status": "succeeded", "result": ROBUST}, 0),
        ({"type": "audit", "status": "succeeded", "result": {"verdict": "fragile"}}, 1),
        ({"type": "audit", "status": "succeeded", "result": {"verdict": "inconclusive"}}, 1),
        ({"type": "audit", "status": "succeeded", "result": {}}, 1),
        ({"type": "audit", "status": "failed", "result": None}, 1),
        ({"type": "audit", "status": "cancelled", "result": None}, 1),
        ({"type": "hessian_benchmark", "status": "succeeded", "result": {"rows": []}}, 0),
        ({"type": "hessian_benchmark", "status": "failed", "result": None}, 1),
    ],
)
def test_job_exit_status_rule(job, expected):
    assert job_exit_status(job) == expected


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([("succeeded", "robust"), ("succeeded", "robust")], 0),
        ([("succeeded", "robust"), ("succeeded", "inconclusive")], 1),
        ([("succeeded", "robust"), ("succeeded", "fragile")], 1),
        ([("succeeded", "robust"), ("failed", None)], 1),
        ([("cancelled", None)], 1),
    ],
)
def test_batch_exit_status_rule(items, expected):
    batch = {"items": [{"status": status, "verdict": verdict} for status, verdict in items]}
    assert batch_exit_status(batch) == expected


@pytest.mark.parametrize("command", ["submit", "status", "batch"])
def test_gate_rule_in_help(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit 1 when any image is fragile or inconclusive" in text
    assert "could not establish robustness" in text


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
    robust = batch["aggregates"]["verdicts"].get("robust", 0)
    assert result.returncode == (0 if robust == 3 else 1), result.stderr

    table = run_cli(api, "batch", str(folder), "--model", MODEL, "--steps", "5", "--poll", "0.3")
    assert table.returncode == result.returncode
    for path in SAMPLES[14:17]:
        assert path.name in table.stdout
    assert "top-k intersection: mean" in table.stdout
    match = re.match(r"batch ([0-9a-f]{32}) ", table.stdout)
    assert match, table.stdout
    assert http.get(f"/v1/batches/{match.group(1)}").json()["count"] == 3


def test_batch_command_names_bad_file(http, api, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(SAMPLES[0], folder / "a.png")
    (folder / "b-notes.png").write_text("not an image")
    result = run_cli(api, "batch", str(folder), "--model", MODEL)
    assert result.returncode == 2
    assert "b-notes.png" in result.stderr
    assert "422" in result.stderr


def test_batch_skips_non_image_files(http, api, tmp_path):
    folder = tmp_path / "scan-folder"
    folder.mkdir()
    shutil.copy(SAMPLES[19], folder / "a.PNG")
    (folder / "README.txt").write_text("notes")
    (folder / "DICOMDIR").write_bytes(b"not an image")
    result = run_cli(api, "batch", str(folder), "--model", MODEL, "--steps", "2", "--json")
    assert result.returncode in (0, 1), result.stderr
    assert json.loads(result.stdout)["count"] == 1
    assert "skipped 2 file(s) without an image extension" in result.stderr
    assert "DICOMDIR, README.txt" in result.stderr


def test_batch_rejects_folder_without_images(tmp_path):
    (tmp_path / "README.txt").write_text("notes")
    env = dict(os.environ, FRAGILITY_API_URL=f"http://127.0.0.1:{free_port()}")
    result = subprocess.run(
        [sys.executable, "-m", "fragility", "batch", str(tmp_path), "--model", MODEL],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert "contains no image files" in result.stderr
    assert "1 other file(s) were skipped" in result.stderr


class ScanPath:
    """An os.PathLike that is neither str nor pathlib.Path."""

    def __init__(self, path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)


def recording_service(requests: list[httpx.Request]) -> httpx.MockTransport:
    """A stand-in for the API that records each request and accepts it."""

    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        requests.append(request)
        return httpx.Response(202, json={"id": "c" * 32, "count": 1})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("kind", ["str", "pathlike", "bytes"])
def test_client_uploads_file_contents(kind):
    image = SAMPLES[0]
    source = {"str": str(image), "pathlike": ScanPath(image), "bytes": image.read_bytes()}[kind]
    requests: list[httpx.Request] = []
    with FragilityClient(MOCK_URL, transport=recording_service(requests)) as client:
        client.submit_audit(source, model=MODEL)
        client.submit_batch([source, source], model=MODEL)
    for request in requests:
        assert image.read_bytes() in request.content
        assert str(image).encode() not in request.content
    assert requests[1].content.count(image.read_bytes()) == 2


def test_client_batch_zip_from_str(tmp_path):
    archive = tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(SAMPLES[0], "a.png")
    requests: list[httpx.Request] = []
    with FragilityClient(MOCK_URL, transport=recording_service(requests)) as client:
        client.submit_batch(str(archive), model=MODEL)
        client.submit_batch(ScanPath(archive), model=MODEL)
    for request in requests:
        assert archive.read_bytes() in request.content
        assert b"application/zip" in request.content


def test_client_rejects_other_types():
    with FragilityClient(MOCK_URL, transport=recording_service([])) as client:
        with pytest.raises(TypeError, match=r"^image must be a file path .* not int$"):
            client.submit_audit(42, model=MODEL)
        with pytest.raises(TypeError, match=r"^images must be a list .* not int$"):
            client.submit_batch(42, model=MODEL)
        with pytest.raises(TypeError, match=r"^images must be a list .* not bytes$"):
            client.submit_batch(b"PNG", model=MODEL)
        with pytest.raises(TypeError, match=r"^images\[1\] must be a file path .* not float$"):
            client.submit_batch([SAMPLES[0], 3.5], model=MODEL)


def test_client_str_path_reaches_worker(http, api):
    with FragilityClient(api.url) as client:
        accepted = client.submit_audit(str(SAMPLES[17]), model=MODEL, steps=2)
        job = client.wait(accepted["id"], poll_s=0.2, timeout_s=120)
    assert job["status"] == "succeeded", job
    assert job["input_sha256"] == [hashlib.sha256(SAMPLES[17].read_bytes()).hexdigest()]


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
