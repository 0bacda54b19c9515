"""Invalid requests: the right 4xx, a JSON error naming the field, and nothing stored."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from fragility.settings import Settings

from .stack import MAX_BATCH_IMAGES, MAX_UPLOAD_BYTES, MODEL, SAMPLES, wait_job

pytestmark = pytest.mark.service

PNG = SAMPLES[0].read_bytes()


def stored_files(service_env) -> set[str]:
    root = Path(service_env["FRAGILITY_STORAGE_DIR"])
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def job_keys(store_client) -> set[str]:
    return set(store_client.scan_iter("fragility:job:*"))


@pytest.fixture
def unchanged(http, service_env, store_client):
    """Assert that the test stored no file and no job record."""
    files_before = stored_files(service_env)
    jobs_before = job_keys(store_client)
    yield
    assert stored_files(service_env) == files_before
    assert job_keys(store_client) == jobs_before


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def assert_error(response, status: int, field: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["field"] == field, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


AUDIT_CASES = [
    # (name, form, files, status, field)
    ("missing file", {"model": MODEL}, None, 422, "image"),
    ("missing model", {}, {"image": ("a.png", PNG)}, 422, "model"),
    ("empty file", {"model": MODEL}, {"image": ("a.png", b"")}, 422, "image"),
    ("not an image", {"model": MODEL}, {"image": ("a.png", b"hello, not a picture")}, 422, "image"),
    ("truncated png", {"model": MODEL}, {"image": ("a.png", PNG[: len(PNG) // 2])}, 422, "image"),
    ("unknown builtin", {"model": "builtin:nope"}, {"image": ("a.png", PNG)}, 422, "model"),
    ("unknown model id", {"model": "f" * 32}, {"image": ("a.png", PNG)}, 422, "model"),
    ("server path", {"model": "/etc/passwd"}, {"image": ("a.png", PNG)}, 422, "model"),
    (
        "epsilon too big",
        {"model": MODEL, "epsilon": "2"},
        {"image": ("a.png", PNG)},
        422,
        "epsilon",
    ),
    ("epsilon text", {"model": MODEL, "epsilon": "big"}, {"image": ("a.png", PNG)}, 422, "epsilon"),
    ("zero steps", {"model": MODEL, "steps": "0"}, {"image": ("a.png", PNG)}, 422, "steps"),
    (
        "unknown method",
        {"model": MODEL, "method": "magic"},
        {"image": ("a.png", PNG)},
        422,
        "method",
    ),
    ("negative seed", {"model": MODEL, "seed": "-1"}, {"image": ("a.png", PNG)}, 422, "seed"),
    ("params not json", {"model": MODEL, "params": "{"}, {"image": ("a.png", PNG)}, 422, "params"),
    (
        "unknown extra param",
        {"model": MODEL, "params": '{"colour": 1}'},
        {"image": ("a.png", PNG)},
        422,
        "colour",
    ),
    ("unknown form field", {"model": MODEL, "size": "9"}, {"image": ("a.png", PNG)}, 422, "size"),
    ("image as text", {"model": MODEL, "image": "not a file"}, None, 422, "image"),
    (
        "two images",
        {"model": MODEL},
        [("image", ("a.png", PNG)), ("image", ("b.png", PNG))],
        422,
        "image",
    ),
    (
        "over byte limit",
        {"model": MODEL},
        {"image": ("a.png", PNG + b"\0" * MAX_UPLOAD_BYTES)},
        413,
        "image",
    ),
    (
        "three images",
        {"model": MODEL},
        [("image", (f"{i}.png", PNG)) for i in range(3)],
        422,
        "image",
    ),
    (
        "params nested too deeply",
        {"model": MODEL, "params": "[" * 50_000 + "]" * 50_000},
        {"image": ("a.png", PNG)},
        422,
        "params",
    ),
    # The digits model takes 32x32 inputs: 1024 pixels.
    ("k over input pixels", {"model": MODEL, "k": "1025"}, {"image": ("a.png", PNG)}, 422, "k"),
    (
        "target box outside input",
        {"model": MODEL, "attack": "targeted", "params": '{"target_box": [0, 0, 8, 33]}'},
        {"image": ("a.png", PNG)},
        422,
        "target_box",
    ),
]


@pytest.mark.parametrize(
    ("form", "files", "status", "field"),
    [case[1:] for case in AUDIT_CASES],
    ids=[case[0] for case in AUDIT_CASES],
)
def test_audit_rejected(http, unchanged, form, files, status, field):
    response = http.post("/v1/audits", data=form, files=files)
    assert_error(response, status, field)


def test_body_over_limit_rejected_early(http, unchanged):
    # Over the request limit (upload limit + 1 MiB of form overhead): rejected from the
    # Content-Length header, before the body is read.
    data = b"\0" * (MAX_UPLOAD_BYTES + 1024 * 1024 + 1)
    response = http.post("/v1/audits", data={"model": MODEL}, files={"image": ("a.png", data)})
    body = assert_error(response, 413, "image")
    assert f"FRAGILITY_MAX_UPLOAD_BYTES ({MAX_UPLOAD_BYTES})" in body["detail"]


def test_audit_k_within_input_accepted(http):
    response = http.post(
        "/v1/audits",
        data={"model": MODEL, "k": "1024", "steps": "1"},
        files={"image": ("a.png", PNG)},
    )
    assert response.status_code == 202, response.text
    # Waiting keeps its artifacts from landing during the next test, which checks the storage.
    assert wait_job(http, response.json()["id"])["status"] == "succeeded"


LIMIT_CASES = {
    "zip member": [("files", ("a.zip", zip_bytes({"big.png": b"\0" * MAX_UPLOAD_BYTES + PNG})))],
    "single batch file": [("files", ("a.png", PNG + b"\0" * MAX_UPLOAD_BYTES))],
    "one of several files": [
        ("files", ("a.png", PNG)),
        ("files", ("b.png", b"\0" * (MAX_UPLOAD_BYTES + 1))),
    ],
}


@pytest.mark.parametrize("files", LIMIT_CASES.values(), ids=LIMIT_CASES.keys())
def test_size_limit_error_names_setting(http, unchanged, files):
    response = http.post("/v1/batches", data={"model": MODEL}, files=files)
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert f"upload limit of {MAX_UPLOAD_BYTES} bytes" in detail
    assert "raise FRAGILITY_MAX_UPLOAD_BYTES" in detail


def test_unknown_job_type_rejected(http, unchanged):
    response = http.post("/v1/jobs", json={"type": "nope", "params": {}})
    body = assert_error(response, 422, "type")
    assert "audit" in body["detail"]


def test_audit_type_needs_upload(http, unchanged):
    response = http.post("/v1/jobs", json={"type": "audit", "params": {"model": MODEL}})
    body = assert_error(response, 422, "type")
    assert "/v1/audits" in body["detail"]


def test_job_missing_type_rejected(http, unchanged):
    assert_error(http.post("/v1/jobs", json={"params": {}}), 422, "type")


def test_job_bad_params_rejected(http, unchanged):
    response = http.post(
        "/v1/jobs", json={"type": "hessian_benchmark", "params": {"not_a_field": 1}}
    )
    body = assert_error(response, 422, "params.not_a_field")
    assert body["errors"][0]["loc"] == ["params", "not_a_field"]


BATCH_CASES = [
    ("zip parent escape", zip_bytes({"ok.png": PNG, "../evil.png": PNG}), 422, "files[0]"),
    ("zip absolute path", zip_bytes({"/tmp/evil.png": PNG}), 422, "files[0]"),
    ("zip backslash escape", zip_bytes({"a\\..\\..\\evil.png": PNG}), 422, "files[0]"),
    ("zip not image", zip_bytes({"a.png": PNG, "b.txt": b"text"}), 422, "files[0][1]"),
    ("zip empty member", zip_bytes({"a.png": PNG, "b.png": b""}), 422, "files[0][1]"),
    ("zip no files", zip_bytes({".hidden": PNG}), 422, "files[0]"),
    ("zip member named dot", zip_bytes({"a.png": PNG, ".": PNG}), 422, "files[0]"),
    ("zip member without name", zip_bytes({"": PNG}), 422, "files[0]"),
    (
        "zip too many",
        zip_bytes({f"{i}.png": PNG for i in range(MAX_BATCH_IMAGES + 1)}),
        422,
        "files[0]",
    ),
    ("broken zip", b"PK\x03\x04" + b"\0" * 100, 422, "files[0]"),
]


@pytest.mark.parametrize(
    ("data", "status", "field"),
    [case[1:] for case in BATCH_CASES],
    ids=[case[0] for case in BATCH_CASES],
)
def test_batch_zip_rejected(http, unchanged, data, status, field):
    response = http.post(
        "/v1/batches", data={"model": MODEL}, files=[("files", ("batch.zip", data))]
    )
    assert_error(response, status, field)


def test_batch_bad_image_rejects_all(http, unchanged):
    files = [("files", ("a.png", PNG)), ("files", ("b.png", PNG)), ("files", ("c.png", b"nope"))]
    assert_error(http.post("/v1/batches", data={"model": MODEL}, files=files), 422, "files[2]")


@pytest.mark.parametrize("extra", [1, 2, 10], ids=["one over", "two over", "ten over"])
def test_batch_too_many_files(http, unchanged, extra):
    files = [("files", (f"{i}.png", PNG)) for i in range(MAX_BATCH_IMAGES + extra)]
    response = http.post("/v1/batches", data={"model": MODEL}, files=files)
    body = assert_error(response, 422, "files")
    assert f"batch limit of {MAX_BATCH_IMAGES} (FRAGILITY_MAX_BATCH_IMAGES)" in body["detail"]


def blank_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_batch_over_pixel_budget(http, unchanged):
    # Images of 6000x6000 pixels that compress to a few kilobytes: each is under the per-image
    # limit, together they are over the batch's pixel budget. The API rejects them from the
    # headers.
    budget = Settings.model_fields["max_batch_pixels"].default
    image = blank_png(6000, 6000)
    assert len(image) < MAX_UPLOAD_BYTES
    count = budget // (6000 * 6000) + 1
    assert count <= MAX_BATCH_IMAGES
    files = [("files", (f"{i}.png", image)) for i in range(count)]
    response = http.post("/v1/batches", data={"model": MODEL}, files=files)
    body = assert_error(response, 422, "files")
    assert f"batch limit of {budget} pixels (FRAGILITY_MAX_BATCH_PIXELS)" in body["detail"]


def test_batch_bad_params(http, unchanged):
    files = [("files", ("a.png", PNG))]
    response = http.post("/v1/batches", data={"model": MODEL, "k": "0"}, files=files)
    assert_error(response, 422, "k")
