"""Nothing is lost: jobs end exactly once through a killed pool process, an API restart and a
Redis restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from worker.store.files import Storage

from .stack import (
    SAMPLES,
    Api,
    finished_total,
    submit_audit,
    wait_job,
    wait_running,
    wait_until,
)

pytestmark = pytest.mark.service

# An audit of this many steps runs for some seconds, long enough to be interrupted mid-attack.
MEDIUM_STEPS = 400


def test_sigkill_mid_audit_reruns_once(http, worker, store_client, service_env):
    succeeded_before = finished_total(store_client, "succeeded")
    job_id = submit_audit(http, SAMPLES[4], steps=MEDIUM_STEPS)
    job = wait_running(http, job_id, min_progress=0.1)
    pid = store_client.hget(f"fragility:job:{job_id}", "worker").rpartition(":")[2]
    assert int(pid) in worker.children(), "the job should run in a pool process of the worker"
    os.kill(int(pid), signal.SIGKILL)

    final = wait_job(http, job_id)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 2
    assert final["result"]["job_id"] == job_id
    assert finished_total(store_client, "succeeded") == succeeded_before + 1
    names = {a["name"] for a in http.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]}
    assert "report.json" in names
    job_dir = Storage(Path(service_env["FRAGILITY_STORAGE_DIR"])).job_dir(job_id)
    assert not list(job_dir.glob("work-*")), "the killed attempt's output should be removed"
    # The pool replaced the killed process.
    wait_until(lambda: len(worker.children()) == 2, 30, "the pool to replace the process")
    assert job["attempts"] == 1


def test_api_restart_mid_job(http, api, store_client):
    succeeded_before = finished_total(store_client, "succeeded")
    job_id = submit_audit(http, SAMPLES[7], steps=MEDIUM_STEPS)
    wait_running(http, job_id)
    api.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{api.url}/healthz", timeout=1)
    api.start()

    final = wait_job(http, job_id)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 1
    assert finished_total(store_client, "succeeded") == succeeded_before + 1


def test_redis_restart_mid_job(http, worker, redis_server, store_client):
    succeeded_before = finished_total(store_client, "succeeded")
    job_id = submit_audit(http, SAMPLES[8], steps=MEDIUM_STEPS)
    wait_running(http, job_id, min_progress=0.05)
    # SIGKILL: no shutdown save; the append-only file is all that survives.
    redis_server.stop()
    redis_server.start()

    final = wait_job(http, job_id, timeout_s=180)
    assert final["status"] == "succeeded", final
    assert final["attempts"] == 1
    assert finished_total(store_client, "succeeded") == succeeded_before + 1
    # The running job's message was acknowledged after the restart: nothing left to redeliver.
    wait_until(lambda: store_client.hlen("unacked") == 0, 10, "the message to be acknowledged")
    assert worker.popen.poll() is None, "the worker should survive a Redis restart"

    after = submit_audit(http, SAMPLES[9], steps=5)
    assert wait_job(http, after)["status"] == "succeeded"


def test_soft_time_limit_fails_job(http, service_env, tmp_path):
    # A second API whose messages carry a 2 s soft limit for audits; the same worker runs them.
    env = dict(service_env, FRAGILITY_TIME_LIMITS='{"audit": [2, 30]}')
    short = Api(env, tmp_path / "api-short.log")
    short.start()
    try:
        with httpx.Client(base_url=short.url, timeout=30) as client:
            job_id = submit_audit(client, SAMPLES[10], steps=5000)
            limits = client.get("/v1/job-types/audit").json()
            assert limits["soft_time_limit_s"] == 2
            final = wait_job(client, job_id, timeout_s=60)
    finally:
        short.stop()
    assert final["status"] == "failed", final
    assert final["error"]["type"] == "SoftTimeLimitExceeded"
    assert final["result"] is None
