"""Batches: many images with shared parameters, per-image jobs and aggregates."""

from __future__ import annotations

import hashlib
import io
import statistics
import zipfile

import pytest

from .stack import MODEL, SAMPLES, wait_until

pytestmark = pytest.mark.service


def wait_batch(http, batch_id: str, timeout_s: float = 240.0) -> dict:
    def done() -> dict | None:
        body = http.get(f"/v1/batches/{batch_id}").json()
        return body if body["done"] else None

    return wait_until(done, timeout_s, f"batch {batch_id} to finish", interval_s=0.5)


def test_batch_of_twenty(http):
    assert len(SAMPLES) >= 20
    images = SAMPLES[:20]
    files = [("files", (f"image{i}.png", path.read_bytes())) for i, path in enumerate(images)]
    response = http.post(
        "/v1/batches", data={"model": MODEL, "steps": "5", "epsilon": "16/255"}, files=files
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["count"] == 20
    assert len(set(accepted["job_ids"])) == 20
    assert response.headers["location"] == f"/v1/batches/{accepted['id']}"

    batch = wait_batch(http, accepted["id"])
    items = batch["items"]
    assert [item["index"] for item in items] == list(range(20))
    assert [item["job_id"] for item in items] == accepted["job_ids"]
    assert all(item["status"] == "succeeded" for item in items), items
    for item, path in zip(items, images, strict=True):
        assert item["input_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    aggregates = batch["aggregates"]
    assert aggregates["statuses"] == {"succeeded": 20}
    assert sum(aggregates["verdicts"].values()) == 20
    values = [item["topk_intersection"] for item in items]
    summary = aggregates["topk_intersection"]
    assert summary["count"] == 20
    assert summary["mean"] == pytest.approx(statistics.fmean(values))
    assert summary["median"] == pytest.approx(statistics.median(values))
    assert summary["min"] == pytest.approx(min(values))
    worst = aggregates["worst"]
    assert worst[0]["topk_intersection"] == pytest.approx(min(values))
    assert [w["topk_intersection"] for w in worst] == sorted(w["topk_intersection"] for w in worst)

    job = http.get(f"/v1/jobs/{items[0]['job_id']}").json()
    assert job["batch_id"] == accepted["id"]
    assert job["batch_index"] == 0
    assert job["result"]["verdict"] == items[0]["verdict"]


def test_batch_from_zip(http):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("scans/", b"")
        archive.writestr("scans/b.png", SAMPLES[5].read_bytes())
        archive.writestr("__MACOSX/scans/._b.png", b"resource fork")
        archive.writestr("scans/.DS_Store", b"finder")
        archive.writestr("scans/a.png", SAMPLES[9].read_bytes())
    response = http.post(
        "/v1/batches",
        data={"model": MODEL, "steps": "5"},
        files=[("files", ("batch.zip", buffer.getvalue(), "application/zip"))],
    )
    assert response.status_code == 202, response.text
    batch = wait_batch(http, response.json()["id"])
    assert batch["count"] == 2
    hashes = [item["input_sha256"] for item in batch["items"]]
    assert hashes == [
        hashlib.sha256(SAMPLES[5].read_bytes()).hexdigest(),
        hashlib.sha256(SAMPLES[9].read_bytes()).hexdigest(),
    ]
    assert all(item["status"] == "succeeded" for item in batch["items"])
