"""The job store's transitions against a real Redis: each job finishes once."""

from __future__ import annotations

import pytest

from worker.store import JobStore, Storage
from worker.store.files import is_valid_id, new_id
from worker.store.redis_client import connect_redis
from worker.tasks import MAX_TRANSIENT_RETRIES

pytestmark = pytest.mark.service


@pytest.fixture
def store(redis_server):
    # A prefix of its own keeps these records apart from the running stack's.
    return JobStore(connect_redis(redis_server.url), prefix=f"test-{new_id()[:8]}")


def test_stale_attempt_cannot_finish(store):
    job = store.create_job("audit", "gpu", {"model": "builtin:digits_cnn"})
    first, second = new_id(), new_id()
    assert store.start(job.id, first, "w:1", max_attempts=3).outcome == "run"
    # A redelivery after the first attempt's process died takes the job over.
    assert store.start(job.id, second, "w:2", max_attempts=3).detail == "2"
    assert not store.set_progress(job.id, first, 0.5, "stale")
    assert not store.finish(job.id, first, "succeeded", result={"verdict": "robust"})
    assert store.finish(job.id, second, "failed", error={"type": "X", "message": "m"})
    assert not store.finish(job.id, second, "succeeded", result={})
    record = store.get_job(job.id)
    assert record.status == "failed"
    assert record.attempts == 2
    assert store.finished_totals() == {("audit", "failed"): 1}
    assert store.status_counts()[("audit", "running")] == 0
    assert store.status_counts()[("audit", "failed")] == 1


def test_final_job_not_restarted(store):
    job = store.create_job("audit", "gpu", {})
    token = new_id()
    store.start(job.id, token, "w", 3)
    store.finish(job.id, token, "succeeded", result={})
    outcome = store.start(job.id, new_id(), "w", 3)
    assert outcome.outcome == "final"
    assert outcome.detail == "succeeded"


def test_attempts_exhausted(store):
    job = store.create_job("audit", "gpu", {})
    for _ in range(2):
        assert store.start(job.id, new_id(), "w", max_attempts=2).outcome == "run"
    assert store.start(job.id, new_id(), "w", max_attempts=2).outcome == "exhausted"
    record = store.get_job(job.id)
    assert record.status == "failed"
    assert record.error["type"] == "WorkerLost"


def test_cancel_outcomes(store):
    queued = store.create_job("audit", "gpu", {})
    assert store.cancel(queued.id) == "cancelled"
    assert store.cancel(queued.id) == "already_cancelled"
    assert store.start(queued.id, new_id(), "w", 3).outcome == "final"

    running = store.create_job("audit", "gpu", {})
    token = new_id()
    store.start(running.id, token, "w", 3)
    assert store.cancel(running.id) == "cancelling"
    assert store.is_cancel_requested(running.id)
    assert store.finish(running.id, token, "cancelled")
    assert store.cancel(new_id()) == "missing"


def test_cancel_requested_before_redelivery(store):
    job = store.create_job("audit", "gpu", {})
    store.start(job.id, new_id(), "w", 3)
    store.cancel(job.id)
    # The process running it died before it noticed; the redelivery ends the job as cancelled.
    assert store.start(job.id, new_id(), "w", 3).outcome == "cancelled"
    assert store.get_job(job.id).status == "cancelled"


def test_requeue_after_transient_error(store):
    job = store.create_job("audit", "gpu", {})
    token = new_id()
    store.start(job.id, token, "w", 3)
    assert store.requeue(job.id, token, "retrying")
    assert store.get_job(job.id).status == "queued"
    assert not store.requeue(job.id, token, "again")


def test_requeued_retries_not_counted_as_lost(store):
    # What run_job does on each Redis error: claim, requeue, and claim again on the retry.
    job = store.create_job("audit", "gpu", {})
    for _ in range(MAX_TRANSIENT_RETRIES):
        token = new_id()
        assert store.start(job.id, token, "w", max_attempts=3).outcome == "run"
        assert store.requeue(job.id, token, "retrying after a Redis error")
    outcome = store.start(job.id, new_id(), "w", max_attempts=3)
    assert outcome.outcome == "run"
    assert outcome.detail == str(MAX_TRANSIENT_RETRIES + 1)
    record = store.get_job(job.id)
    assert record.attempts == MAX_TRANSIENT_RETRIES + 1
    assert record.lost_attempts == 0


def test_lost_attempts_counted_after_requeues(store):
    job = store.create_job("audit", "gpu", {})
    token = new_id()
    store.start(job.id, token, "w", max_attempts=2)
    store.requeue(job.id, token, "retrying after a Redis error")
    # Two deliveries whose process died: the second loss reaches max_attempts.
    assert store.start(job.id, new_id(), "w", max_attempts=2).outcome == "run"
    assert store.start(job.id, new_id(), "w", max_attempts=2).outcome == "run"
    exhausted = store.start(job.id, new_id(), "w", max_attempts=2)
    assert exhausted.outcome == "exhausted"
    assert exhausted.detail == "2"
    record = store.get_job(job.id)
    assert record.error["type"] == "WorkerLost"
    assert record.lost_attempts == 2
    assert record.attempts == 3


def test_id_with_trailing_newline_invalid():
    assert is_valid_id("a" * 32)
    assert not is_valid_id("a" * 32 + "\n")
    assert not is_valid_id("A" * 32)


def test_artifact_name_with_nul_missing(tmp_path):
    storage = Storage(tmp_path)
    job_id = new_id()
    storage.artifacts_dir(job_id).mkdir(parents=True)
    (storage.artifacts_dir(job_id) / "report.json").write_text("{}")
    assert storage.artifact_path(job_id, "report.json") is not None
    assert storage.artifact_path(job_id, "report.json\x00.png") is None


def test_undispatched_jobs_failed(store):
    job = store.create_job("audit", "gpu", {})
    dispatched = store.create_job("audit", "gpu", {})
    store.mark_dispatched([dispatched.id])
    assert store.fail_undispatched(older_than_s=3600) == []
    assert store.fail_undispatched(older_than_s=0) == [job.id]
    assert store.get_job(job.id).status == "failed"
    assert store.get_job(job.id).error["type"] == "NotEnqueued"
    assert store.get_job(dispatched.id).status == "queued"


def test_batch_records(store):
    batch, jobs = store.create_batch("audit", "gpu", {"steps": 5}, [["a"], ["b"]], [["x"], ["y"]])
    loaded = store.get_batch(batch.id)
    assert loaded.job_ids == [job.id for job in jobs]
    records = store.get_jobs([*loaded.job_ids, new_id()])
    assert [r.batch_index for r in records[:2]] == [0, 1]
    assert records[1].input_sha256 == ["y"]
    assert records[2] is None


def test_duration_histogram(store):
    job = store.create_job("audit", "gpu", {})
    token = new_id()
    store.start(job.id, token, "w", 3)
    store.finish(job.id, token, "succeeded", result={})
    histogram = store.duration_histograms()["audit"]
    assert histogram["count"] == 1
    assert histogram["1"] == 1
    assert histogram["+Inf"] == 1
    assert 0 <= histogram["sum"] < 1
