"""`fragility audit` with a target mask image, and on the bundled faces model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from fragility.cli import EXIT_OK, main

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "models" / "builtin" / "samples"
DIGIT = SAMPLES_DIR / "digits_cnn_3_0649.png"
FACE = SAMPLES_DIR / "faces_cnn_face_0027.png"


def test_targeted_attack_with_mask(tmp_path):
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[0:16, 0:16] = 255  # the top-left quarter, at twice the model's 32x32 input
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / "out"

    status = main(
        [
            "audit",
            str(DIGIT),
            "--model",
            "builtin:digits_cnn",
            "--attack",
            "targeted",
            "--target-mask",
            str(mask_path),
            "--steps",
            "10",
            "--step-size",
            "1/255",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    report = json.loads((out / DIGIT.stem / "report.json").read_text())

    assert status == EXIT_OK
    assert report["attack"]["name"] == "targeted"
    assert report["attack"]["found_label_preserving"] is True
    # The selected iterate puts more of the map inside the mask than the original did.
    assert report["attack"]["selection_score"] > report["attack"]["selection_score_original"]


def test_faces_model_audit(tmp_path):
    status = main(
        [
            "audit",
            str(FACE),
            "--model",
            "builtin:faces_cnn",
            "--steps",
            "16",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    report = json.loads((tmp_path / FACE.stem / "report.json").read_text())

    assert status == EXIT_OK
    assert report["label"]["original_name"] == "face"
    assert report["label"]["preserved"] is True
    assert report["perturbation"]["linf"] <= 8 / 255 + 1e-6
