"""Registered models: upload checks, use in audits, and a worker marking bad weights invalid."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest

from .stack import ROOT, SAMPLES, wait_job

pytestmark = pytest.mark.service

BUILTIN = ROOT / "models" / "builtin"
DIGITS_SPEC = json.loads((BUILTIN / "digits_cnn.json").read_text())
DIGITS_WEIGHTS = BUILTIN / "digits_cnn.safetensors"
FACES_WEIGHTS = BUILTIN / "faces_cnn.safetensors"


def register(http, spec: dict, weights: bytes, name: str = "weights.safetensors"):
    return http.post(
        "/v1/models", data={"spec": json.dumps(spec)}, files={"weights": (name, weights)}
    )


def audit(http, model: str) -> str:
    response = http.post(
        "/v1/audits",
        data={"model": model, "steps": "5"},
        files={"image": ("a.png", SAMPLES[0].read_bytes())},
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_registered_model_audits(http, service_env):
    spec = {key: value for key, value in DIGITS_SPEC.items() if key != "weights"}
    response = register(http, spec, DIGITS_WEIGHTS.read_bytes(), "my-private-name.safetensors")
    assert response.status_code == 201, response.text
    model = response.json()
    assert response.headers["location"] == f"/v1/models/{model['id']}"
    assert model["weights_sha256"] == hashlib.sha256(DIGITS_WEIGHTS.read_bytes()).hexdigest()
    assert model["status"] == "unverified"
    assert model["spec"]["weights"] == "weights.safetensors"
    stored = Path(service_env["FRAGILITY_STORAGE_DIR"]) / "models" / model["id"]
    assert sorted(p.name for p in stored.iterdir()) == ["spec.json", "weights.safetensors"]
    spec_sha = hashlib.sha256((stored / "spec.json").read_bytes()).hexdigest()
    assert model["spec_sha256"] == spec_sha

    listed = [m["reference"] for m in http.get("/v1/models").json()["models"]]
    assert model["id"] in listed

    job = wait_job(http, audit(http, model["id"]))
    assert job["status"] == "succeeded", job
    assert job["result"]["model"]["weights_sha256"] == model["weights_sha256"]
    assert http.get(f"/v1/models/{model['id']}").json()["status"] == "verified"
    # The report names the model as the client did, never by its path on the server.
    assert job["result"]["model"]["reference"] == model["id"]
    assert job["result"]["params"]["model"] == model["id"]
    saved = http.get(f"/v1/jobs/{job['id']}/artifacts/report.json").json()
    assert saved["model"]["reference"] == model["id"]
    assert saved["params"]["model"] == model["id"]
    assert service_env["FRAGILITY_STORAGE_DIR"] not in json.dumps(saved)

    # The API reads the registered model's 32x32 input size from its stored spec.
    too_large = http.post(
        "/v1/audits",
        data={"model": model["id"], "k": str(32 * 32 + 1)},
        files={"image": ("a.png", SAMPLES[0].read_bytes())},
    )
    assert too_large.status_code == 422, too_large.text
    assert too_large.json()["field"] == "k"


def test_mismatched_weights_marked_invalid(http):
    # The faces model's weights do not fit the digits architecture (channels, classes).
    spec = {key: value for key, value in DIGITS_SPEC.items() if key != "weights"}
    response = register(http, spec, FACES_WEIGHTS.read_bytes())
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]

    job = wait_job(http, audit(http, model_id))
    assert job["status"] == "failed"
    assert job["error"]["type"] == "ModelSpecError"
    assert "does not match" in job["error"]["message"]
    model = http.get(f"/v1/models/{model_id}").json()
    assert model["status"] == "invalid"
    assert "does not match" in model["status_message"]

    again = http.post(
        "/v1/audits",
        data={"model": model_id},
        files={"image": ("a.png", SAMPLES[0].read_bytes())},
    )
    assert again.status_code == 422
    assert again.json()["field"] == "model"


@pytest.mark.parametrize(
    ("spec", "weights", "field"),
    [
        (DIGITS_SPEC, pickle.dumps({"w": [1.0]}), "weights"),
        (DIGITS_SPEC, b"not weights at all", "weights"),
        (DIGITS_SPEC, b"", "weights"),
        ({**DIGITS_SPEC, "format": "torchscript"}, DIGITS_WEIGHTS.read_bytes(), "weights"),
        ({**DIGITS_SPEC, "channels": 2}, DIGITS_WEIGHTS.read_bytes(), "spec.channels"),
        ({**DIGITS_SPEC, "mean": [0.1, 0.2]}, DIGITS_WEIGHTS.read_bytes(), "spec"),
        ({**DIGITS_SPEC, "extra": 1}, DIGITS_WEIGHTS.read_bytes(), "spec.extra"),
    ],
    ids=["pickle", "garbage", "empty", "torchscript-needs-archive", "channels", "mean", "extra"],
)
def test_bad_model_rejected(http, service_env, spec, weights, field):
    models_dir = Path(service_env["FRAGILITY_STORAGE_DIR"]) / "models"
    before = set(models_dir.iterdir()) if models_dir.exists() else set()
    response = register(http, spec, weights)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    after = set(models_dir.iterdir()) if models_dir.exists() else set()
    assert after == before


@pytest.mark.parametrize("text", ["{", "[" * 50_000 + "]" * 50_000], ids=["broken", "nested"])
def test_spec_not_json_rejected(http, text):
    response = http.post(
        "/v1/models", data={"spec": text}, files={"weights": ("w", DIGITS_WEIGHTS.read_bytes())}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "spec"


def test_spec_as_file_part(http):
    spec = {key: value for key, value in DIGITS_SPEC.items() if key != "weights"}
    files = {
        "spec": ("spec.json", json.dumps(spec).encode(), "application/json"),
        "weights": ("w.safetensors", DIGITS_WEIGHTS.read_bytes()),
    }
    response = http.post("/v1/models", files=files)
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["arch"] == spec["arch"]

    files["spec"] = ("spec.json", b"[1, 2]", "application/json")
    response = http.post("/v1/models", files=files)
    assert response.status_code == 422
    assert response.json()["field"] == "spec"
    assert "must be a JSON object" in response.json()["detail"]

    files["spec"] = ("spec.json", b"\xff\xfe{}", "application/json")
    response = http.post("/v1/models", files=files)
    assert response.status_code == 422
    assert "not UTF-8" in response.json()["detail"]


def test_any_load_error_marks_invalid(http, service_env):
    # torchvision's RAFT takes no num_classes, so building it raises TypeError, not
    # ModelSpecError.
    spec = {key: value for key, value in DIGITS_SPEC.items() if key != "weights"}
    spec.update(format="torchvision", arch="raft_small")
    response = register(http, spec, DIGITS_WEIGHTS.read_bytes())
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]

    job = wait_job(http, audit(http, model_id))
    assert job["status"] == "failed"
    assert "TypeError" in job["error"]["message"]
    model = http.get(f"/v1/models/{model_id}").json()
    assert model["status"] == "invalid"
    assert "TypeError" in model["status_message"]
    assert service_env["FRAGILITY_STORAGE_DIR"] not in model["status_message"]


def test_non_finite_output_on_input_keeps_model(http, service_env):
    # With mean 0.5 and a tiny std, the gray probe of the loader normalises to 0 (finite
    # logits), but the dark background of a digit image overflows to -inf: the model fails on
    # this input only.
    spec = {key: value for key, value in DIGITS_SPEC.items() if key != "weights"}
    spec.update(mean=[0.5], std=[1e-40])
    response = register(http, spec, DIGITS_WEIGHTS.read_bytes())
    assert response.status_code == 201, response.text
    model_id = response.json()["id"]

    job = wait_job(http, audit(http, model_id))
    assert job["status"] == "failed"
    assert "NaN or infinite" in job["error"]["message"]
    assert model_id in job["error"]["message"]
    assert service_env["FRAGILITY_STORAGE_DIR"] not in job["error"]["message"]
    assert http.get(f"/v1/models/{model_id}").json()["status"] == "verified"
    # Other clients can still use the model.
    audit(http, model_id)
