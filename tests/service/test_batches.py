"""Batches: many images with shared parameters, per-image jobs and aggregates."""

from __future__ import annotations

import asyncio
import hashlib
import io
import statistics
import threading
import time
import zipfile

import httpx
import pytest

from app.errors import ApiError
from app.factory import create_app
from app.routes import batches
from fragility.settings import Settings

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


def test_batches_share_few_threads(redis_server, tmp_path, monkeypatch):
    # An API in this process whose batch check only sleeps and counts how many run at once.
    running = 0
    max_concurrent = 0
    lock = threading.Lock()

    def slow_check(form, services):
        nonlocal running, max_concurrent
        with lock:
            running += 1
            max_concurrent = max(max_concurrent, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        raise ApiError(422, "files: rejected by the test", "files")

    monkeypatch.setattr(batches, "_submit_batch", slow_check)
    app = create_app(Settings(redis_url=redis_server.url, storage_dir=tmp_path))
    files = [("files", ("a.png", SAMPLES[0].read_bytes()))]
    requests = 3 * batches.BATCH_THREADS

    async def post_all() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client,
        ):
            responses = await asyncio.gather(
                *[
                    client.post("/v1/batches", data={"model": MODEL}, files=files)
                    for _ in range(requests)
                ]
            )
        return [response.status_code for response in responses]

    assert asyncio.run(post_all()) == [422] * requests
    assert max_concurrent == batches.BATCH_THREADS
