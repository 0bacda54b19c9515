"""``fragility audit`` and ``fragility run audit`` end to end in a subprocess.

Three runs of the same audit, all with seed 7: two through ``fragility audit`` (the second with
--fail-on-fragile) and one through ``fragility run audit``. The centre-of-mass attack with
SmoothGrad uses every random draw the audit makes (SmoothGrad noise, the attack's random start
and the random baseline), so equal numbers show that the seed fixes all of them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.spec import BUILTIN_DIR
from worker.audit.artifacts import ARTIFACTS
from worker.audit.params import AuditParams
from worker.audit.software import PACKAGES

SAMPLE = BUILTIN_DIR / "samples" / "digits_cnn_5_0808.png"
PARAMS = {
    "model": "builtin:digits_cnn",
    "attack": "center_of_mass",
    "method": "smoothgrad",
    "smoothgrad_samples": 4,
    "steps": 10,
    "seed": 7,
    "device": "cpu",
}
OPTIONS = [
    "--model",
    "builtin:digits_cnn",
    "--attack",
    "center_of_mass",
    "--method",
    "smoothgrad",
    "--smoothgrad-samples",
    "4",
    "--steps",
    "10",
    "--seed",
    "7",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def runs(run_fragility, tmp_path_factory) -> dict:
    """Output directory and completed process of each of the three runs."""
    root = tmp_path_factory.mktemp("cli")
    first = run_fragility("audit", SAMPLE, *OPTIONS, "--out", root / "first")
    second = run_fragility("audit", SAMPLE, *OPTIONS, "--fail-on-fragile", "--out", root / "second")
    params_file = root / "params.json"
    params_file.write_text(json.dumps(PARAMS))
    job = run_fragility(
        "run", "audit", "--params", params_file, "--input", SAMPLE, "--out", root / "job", "--quiet"
    )
    return {
        "first": (root / "first" / SAMPLE.stem, first),
        "second": (root / "second" / SAMPLE.stem, second),
        "job": (root / "job", job),
    }


def read_report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text(encoding="utf-8"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_audit_exits_zero(runs):
    directory, result = runs["first"]

    assert result.returncode == 0, result.stderr
    assert f"{SAMPLE.stem}: " in result.stdout
    assert str(directory / "report.json") in result.stdout


def test_report_has_required_fields(runs):
    report = read_report(runs["first"][0])

    for key in ("original", "perturbed", "preserved"):
        assert key in report["label"], key
    assert isinstance(report["label"]["preserved"], bool)
    for key in ("linf", "l2"):
        assert isinstance(report["perturbation"][key], float), key
    for key in ("topk_intersection", "spearman", "center_of_mass_shift"):
        assert isinstance(report["metrics"][key], float), key
    assert isinstance(report["baseline"]["metrics"]["topk_intersection"], float)
    assert report["verdict"] in ("fragile", "robust", "inconclusive")
    assert report["verdict_reason"]
    assert isinstance(report["rounded_8bit"]["preserved"], bool)
    assert report["run_seconds"] > 0
    assert report["seed"] == 7


def test_report_hashes_match_files(runs):
    report = read_report(runs["first"][0])

    assert report["input"]["sha256"] == sha256(SAMPLE)
    assert report["model"]["weights_sha256"] == sha256(BUILTIN_DIR / "digits_cnn.safetensors")
    assert report["model"]["spec_sha256"] == sha256(BUILTIN_DIR / "digits_cnn.json")


def test_report_records_every_parameter(runs):
    report = read_report(runs["first"][0])
    expected = AuditParams.model_validate(PARAMS)

    assert set(AuditParams.model_fields) <= set(report["params"])
    for name, value in PARAMS.items():
        assert report["params"][name] == value, name
    assert report["params"]["epsilon"] == pytest.approx(8 / 255)
    assert report["params"]["step_size"] == pytest.approx(expected.resolved_step_size)
    assert report["params"]["k"] == 20  # 2% of 32x32


def test_report_records_software(runs):
    software = read_report(runs["first"][0])["software"]

    assert software["python"]
    for package in PACKAGES:
        assert software[package] != "not installed", package


def test_artifacts_written(runs):
    directory = runs["first"][0]
    report = read_report(directory)

    for name in ARTIFACTS:
        assert (directory / name).is_file(), name
        assert (directory / name).stat().st_size > 0, name
    assert set(report["artifacts"]) == set(ARTIFACTS)
    assert not (directory / "report.json.tmp").exists()


def test_perturbed_png_is_npy_rounded(runs):
    directory = runs["first"][0]
    perturbed = np.load(directory / "perturbed.npy")
    decoded = np.asarray(Image.open(directory / "perturbed.png"))
    original = np.asarray(Image.open(directory / "original.png"))
    report = read_report(directory)

    assert perturbed.shape == (1, 32, 32)
    assert perturbed.dtype == np.float32
    np.testing.assert_array_equal(decoded, np.round(perturbed[0] * 255).astype(np.uint8))
    np.testing.assert_array_equal(original, np.asarray(Image.open(SAMPLE)))
    linf = np.abs(perturbed[0] - original / 255.0).max()
    assert linf == pytest.approx(report["perturbation"]["linf"], abs=1e-6)
    assert linf <= 8 / 255 + 1e-6


def test_same_seed_same_numbers(runs):
    first_dir, _ = runs["first"]
    second_dir, second = runs["second"]
    first, again = read_report(first_dir), read_report(second_dir)

    assert second.returncode in (0, 1), second.stderr
    for key in ("label", "perturbation", "metrics", "baseline", "rounded_8bit", "attack"):
        assert first[key] == again[key], key
    assert first["verdict"] == again["verdict"]
    perturbed_first = np.load(first_dir / "perturbed.npy")
    perturbed_again = np.load(second_dir / "perturbed.npy")
    assert perturbed_first.tobytes() == perturbed_again.tobytes()


def test_fail_on_fragile_exit_status(runs):
    second_dir, second = runs["second"]
    verdict = read_report(second_dir)["verdict"]

    assert second.returncode == (0 if verdict == "robust" else 1), second.stderr


def test_run_audit_job_end_to_end(runs):
    directory, result = runs["job"]

    assert result.returncode == 0, result.stderr
    assert "audit: done" in result.stdout
    job_result = json.loads((directory / "result.json").read_text(encoding="utf-8"))
    report = read_report(directory)
    assert job_result["verdict"] == report["verdict"]
    assert job_result["input"]["sha256"] == sha256(SAMPLE)
    for name in ARTIFACTS:
        assert (directory / name).is_file(), name


def test_run_audit_matches_audit_command(runs):
    """The job runner and the audit command compute the same numbers for the same seed."""
    from_job = read_report(runs["job"][0])
    from_command = read_report(runs["first"][0])

    for key in ("label", "perturbation", "metrics", "baseline", "rounded_8bit"):
        assert from_job[key] == from_command[key], key
