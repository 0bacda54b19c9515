"""Cancellation: a queued job never starts, a running job stops at its next step."""

from __future__ import annotations

import pytest

from fragility.client import ApiError, FragilityClient

from .stack import SAMPLES, get_job, run_cli, submit_audit, wait_job, wait_running, wait_until

pytestmark = pytest.mark.service

# Enough steps that an audit runs for minutes unless cancelled.
LONG_STEPS = 5000


def test_cancel_queued_and_running(http, store_client):
    # The worker has two pool processes: two long audits occupy both, so a third stays queued.
    running = [submit_audit(http, SAMPLES[i], steps=LONG_STEPS) for i in (0, 1)]
    for job_id in running:
        wait_running(http, job_id, min_progress=0.02)
    queued = submit_audit(http, SAMPLES[2], steps=5)
    assert get_job(http, queued)["status"] == "queued"

    response = http.delete(f"/v1/jobs/{queued}")
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "cancelled"
    assert response.json()["job"]["status"] == "cancelled"

    for job_id in running:
        response = http.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        assert response.json()["outcome"] == "cancelling"
    for job_id in running:
        job = wait_job(http, job_id, timeout_s=30)
        assert job["status"] == "cancelled", job
        assert job["progress"] < 0.5
        assert job["result"] is None
        listing = http.get(f"/v1/jobs/{job_id}/artifacts").json()
        assert listing["artifacts"] == []

    # The queued job's message reaches a free pool process and is dropped there: wait until no
    # message is queued or unacknowledged (kombu keeps delivered messages in "unacked").
    wait_until(
        lambda: store_client.llen("gpu") == 0 and store_client.hlen("unacked") == 0,
        30,
        "the gpu queue to drain",
    )
    job = get_job(http, queued)
    assert job["status"] == "cancelled"
    assert job["attempts"] == 0
    assert job["started_at"] is None

    again = http.delete(f"/v1/jobs/{queued}")
    assert again.status_code == 200
    assert again.json()["outcome"] == "already_cancelled"


def test_cancel_command_exit_status(http, api):
    running = submit_audit(http, SAMPLES[5], steps=LONG_STEPS)
    wait_running(http, running, min_progress=0.0)
    result = run_cli(api, "cancel", running)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in (f"job {running}: cancelling", f"job {running}: cancelled")
    assert wait_job(http, running, timeout_s=30)["status"] == "cancelled"
    again = run_cli(api, "cancel", running)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"job {running}: already cancelled"

    finished = submit_audit(http, SAMPLES[6], steps=2)
    assert wait_job(http, finished)["status"] == "succeeded"
    result = run_cli(api, "cancel", finished)
    assert result.returncode == 1
    assert f"job {finished} already succeeded" in result.stderr

    missing = "0" * 32
    result = run_cli(api, "cancel", missing)
    assert result.returncode == 2
    assert "404" in result.stderr
    with FragilityClient(api.url) as client, pytest.raises(ApiError) as raised:
        client.cancel(missing)
    assert raised.value.status_code == 404
