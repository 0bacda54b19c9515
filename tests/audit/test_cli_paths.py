"""Path checks of `fragility audit` that fail before any model is loaded."""

from __future__ import annotations

from pathlib import Path

from fragility.cli import EXIT_ERROR, main

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "models" / "builtin" / "samples"
SAMPLE = SAMPLES_DIR / "digits_cnn_3_0649.png"


def test_directory_as_image_rejected(tmp_path, capsys):
    status = main(
        ["audit", str(SAMPLES_DIR), "--model", "builtin:digits_cnn", "--out", str(tmp_path)]
    )
    error = capsys.readouterr().err
    assert status == EXIT_ERROR
    assert "is a directory" in error
    assert "*.png" in error


def test_out_that_is_a_file_rejected(tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a directory")
    status = main(["audit", str(SAMPLE), "--model", "builtin:digits_cnn", "--out", str(out)])
    error = capsys.readouterr().err
    assert status == EXIT_ERROR
    assert "--out" in error
    assert str(out) in error
    assert len(error.strip().splitlines()) == 1
