"""JSON model specs and builtin references, validated without torch."""

from __future__ import annotations

import json

import pytest

from models.spec import ModelSpecError, list_builtin_models, read_spec, resolve_reference

VALID = {
    "format": "torchvision",
    "arch": "resnet18",
    "weights": "w.safetensors",
    "num_classes": 3,
    "channels": 3,
    "input_size": [64, 48],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.2, 0.2, 0.2],
    "class_names": ["a", "b", "c"],
}


@pytest.fixture
def spec_dir(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"placeholder")
    return tmp_path


def write(directory, fields: dict, name: str = "spec.json"):
    path = directory / name
    path.write_text(json.dumps(fields))
    return path


def test_builtin_models_listed():
    builtins = list_builtin_models()

    assert {"digits_cnn", "faces_cnn"} <= set(builtins)
    assert all(path.suffix == ".json" for path in builtins.values())


def test_builtin_reference_resolves():
    resolved = resolve_reference("builtin:digits_cnn")

    assert resolved.reference == "builtin:digits_cnn"
    assert resolved.spec.input_size == (32, 32)
    assert resolved.weights_path.name == "digits_cnn.safetensors"
    assert resolved.weights_path.is_file()


def test_unknown_builtin_lists_known():
    with pytest.raises(ModelSpecError) as caught:
        resolve_reference("builtin:digits_cn")

    message = str(caught.value)
    assert "unknown builtin model 'digits_cn'" in message
    assert "builtin:digits_cnn" in message
    assert "builtin:faces_cnn" in message


def test_weights_relative_to_spec(spec_dir, monkeypatch, tmp_path_factory):
    path = write(spec_dir, VALID)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))

    resolved = read_spec(path)

    assert resolved.weights_path == (spec_dir / "w.safetensors").resolve()
    assert resolved.spec.input_size == (64, 48)


def test_missing_spec_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match="not found"):
        resolve_reference(str(tmp_path / "absent.json"))


def test_invalid_json_rejected(spec_dir):
    path = spec_dir / "broken.json"
    path.write_text('{"format": "torchvision",')

    with pytest.raises(ModelSpecError, match="is not valid JSON"):
        read_spec(path)


def test_missing_weights_rejected(spec_dir):
    path = write(spec_dir, {**VALID, "weights": "other.safetensors"})

    with pytest.raises(ModelSpecError, match=r"other\.safetensors.*not found"):
        read_spec(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channels": 2}, "channels"),
        ({"mean": [0.5]}, "mean must have one value per channel"),
        ({"std": [0.2, 0.0, 0.2]}, "std values must be > 0"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names but num_classes is 3"),
        ({"input_size": [4, 64]}, "input_size must be"),
        ({"num_classes": 1}, "num_classes"),
        ({"arch": None}, "'arch' is required"),
        ({"format": "onnx"}, "format"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_fields_rejected(spec_dir, change, message):
    path = write(spec_dir, {**VALID, **change})

    with pytest.raises(ModelSpecError, match="is invalid") as caught:
        read_spec(path)
    assert message in str(caught.value)


def test_torchscript_needs_no_arch(spec_dir):
    fields = {key: value for key, value in VALID.items() if key != "arch"}
    path = write(spec_dir, {**fields, "format": "torchscript"})

    assert read_spec(path).spec.arch is None
