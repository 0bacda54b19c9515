"""Model loading from JSON specs: torchvision with safetensors or torch.save weights, TorchScript,
and every kind of bad weights file the loader must reject without running code from it."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from models.architectures import SmallCNN
from models.loading import NormalizedClassifier, load_model
from models.spec import ModelSpecError

RESNET_SPEC = {
    "format": "torchvision",
    "arch": "resnet18",
    "num_classes": 10,
    "channels": 3,
    "input_size": [64, 64],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def write_spec(directory: Path, name: str, weights: str, **fields) -> Path:
    """Write NAME.json next to the weights and return its path."""
    path = directory / f"{name}.json"
    path.write_text(json.dumps({**fields, "weights": weights}))
    return path


def script_and_save(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        # torch 2.14 marks TorchScript as deprecated; it is still a supported input format.
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), str(path))


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory) -> Path:
    """resnet18 (10 classes) with random weights, saved as safetensors and as torch.save."""
    directory = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    network = torchvision.models.resnet18(num_classes=10).eval()
    state = {key: value.contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(directory / "resnet18.safetensors"))
    torch.save(state, directory / "resnet18.pt")
    write_spec(directory, "safetensors", "resnet18.safetensors", **RESNET_SPEC)
    write_spec(directory, "state_dict", "resnet18.pt", **RESNET_SPEC)
    return directory


def probe_logits(loaded) -> torch.Tensor:
    inputs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return loaded.model(inputs)


@pytest.mark.parametrize(
    ("spec_name", "weights_name"),
    [("safetensors", "resnet18.safetensors"), ("state_dict", "resnet18.pt")],
)
def test_torchvision_spec_loads(resnet_dir, spec_name, weights_name):
    spec_path = resnet_dir / f"{spec_name}.json"
    loaded = load_model(str(spec_path))
    saved = torch.load(resnet_dir / "resnet18.pt", weights_only=True)

    assert isinstance(loaded.model, NormalizedClassifier)
    assert loaded.model.training is False
    assert loaded.scripted is False
    assert loaded.spec.arch == "resnet18"
    assert loaded.reference == str(spec_path)
    weights_bytes = (resnet_dir / weights_name).read_bytes()
    assert loaded.weights_sha256 == hashlib.sha256(weights_bytes).hexdigest()
    assert loaded.spec_sha256 == hashlib.sha256(spec_path.read_bytes()).hexdigest()
    for key, value in loaded.model.network.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert probe_logits(loaded).shape == (2, 10)


def test_both_weight_formats_give_same_logits(resnet_dir):
    from_safetensors = load_model(str(resnet_dir / "safetensors.json"))
    from_state_dict = load_model(str(resnet_dir / "state_dict.json"))

    torch.testing.assert_close(probe_logits(from_safetensors), probe_logits(from_state_dict))


def test_normalisation_inside_wrapper(resnet_dir):
    loaded = load_model(str(resnet_dir / "safetensors.json"))
    inputs = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    mean = torch.tensor(RESNET_SPEC["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(RESNET_SPEC["std"]).view(1, 3, 1, 1)

    with torch.no_grad():
        wrapped = loaded.model(inputs)
        direct = loaded.model.network((inputs - mean) / std)

    torch.testing.assert_close(wrapped, direct)


def test_wrong_shape_weights_rejected(tmp_path):
    network = torchvision.models.resnet18(num_classes=5)
    state = {key: value.contiguous() for key, value in network.state_dict().items()}
    save_file(state, str(tmp_path / "five.safetensors"))
    spec = write_spec(tmp_path, "resnet", "five.safetensors", **RESNET_SPEC)

    with pytest.raises(ModelSpecError) as caught:
        load_model(str(spec))

    message = str(caught.value)
    assert "five.safetensors" in message
    assert "does not match architecture 'resnet18' with num_classes=10" in message
    assert "fc.weight" in message
    assert "\n" not in message


class MarkerOnUnpickle:
    """Pickles as a call that creates a marker directory, so running it leaves evidence."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_pickled_object_rejected_without_running(tmp_path):
    marker = tmp_path / "unpickled-marker"
    payload = {"fc.weight": torch.zeros(10, 512), "hook": MarkerOnUnpickle(marker)}
    torch.save(payload, tmp_path / "evil.pt")
    spec = write_spec(tmp_path, "evil", "evil.pt", **RESNET_SPEC)

    with pytest.raises(ModelSpecError, match="contains pickled Python objects") as caught:
        load_model(str(spec))

    assert "evil.pt" in str(caught.value)
    assert "\x1b" not in str(caught.value), "torch's terminal escape codes leaked"
    assert not marker.exists(), "the pickled object's __reduce__ ran during loading"


def test_pickled_module_rejected(tmp_path):
    torch.save(torchvision.models.resnet18(num_classes=10), tmp_path / "whole.pt")
    spec = write_spec(tmp_path, "whole", "whole.pt", **RESNET_SPEC)

    with pytest.raises(ModelSpecError, match="contains pickled Python objects"):
        load_model(str(spec))


def test_non_mapping_weights_rejected(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pt")
    spec = write_spec(tmp_path, "list", "list.pt", **RESNET_SPEC)

    with pytest.raises(ModelSpecError, match="does not contain a state_dict"):
        load_model(str(spec))


def test_corrupt_safetensors_rejected(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    spec = write_spec(tmp_path, "junk", "junk.safetensors", **RESNET_SPEC)

    with pytest.raises(ModelSpecError, match="not a valid safetensors file"):
        load_model(str(spec))


@pytest.mark.parametrize(
    "content",
    [b"these are not weights\n", b"", b"\x80\x02K\x05.", b"PK\x03\x04 truncated zip"],
    ids=["text", "empty", "bare-pickle", "truncated-zip"],
)
def test_unreadable_weights_rejected(tmp_path, content):
    (tmp_path / "w.pt").write_bytes(content)
    spec = write_spec(tmp_path, "w", "w.pt", **RESNET_SPEC)

    with pytest.raises(ModelSpecError, match=r"w\.pt' could not be read by torch\.load") as caught:
        load_model(str(spec))
    assert "\n" not in str(caught.value)


def test_unknown_torchvision_arch_rejected(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    spec = write_spec(tmp_path, "bad", "w.safetensors", **{**RESNET_SPEC, "arch": "resnet19"})

    with pytest.raises(ModelSpecError, match="unknown torchvision architecture 'resnet19'"):
        load_model(str(spec))


def test_input_channels_mismatch_rejected(resnet_dir, tmp_path):
    # resnet18 takes 3 channels; a spec claiming 1 fails on the probe input.
    gray = {**RESNET_SPEC, "channels": 1, "mean": [0.5], "std": [0.25]}
    weights = str(resnet_dir / "resnet18.safetensors")
    spec = write_spec(tmp_path, "gray", weights, **gray)

    with pytest.raises(ModelSpecError, match=r"failed on a \(1, 1, 64, 64\) input"):
        load_model(str(spec))


def digits_network() -> SmallCNN:
    from safetensors.torch import load_file

    from models.spec import BUILTIN_DIR

    network = SmallCNN(num_classes=10, channels=1)
    network.load_state_dict(load_file(str(BUILTIN_DIR / "digits_cnn.safetensors")))
    return network.eval()


DIGITS_SCRIPTED_SPEC = {
    "format": "torchscript",
    "num_classes": 10,
    "channels": 1,
    "input_size": [32, 32],
    "mean": [0.305195],
    "std": [0.323552],
}


def test_torchscript_matches_eager(tmp_path, digits_model):
    script_and_save(digits_network(), tmp_path / "digits.pt")
    spec = write_spec(tmp_path, "digits", "digits.pt", **DIGITS_SCRIPTED_SPEC)

    loaded = load_model(str(spec))
    inputs = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        scripted = loaded.model(inputs)
        eager = digits_model.model(inputs)

    assert loaded.scripted is True
    assert isinstance(loaded.model.network, torch.jit.ScriptModule)
    torch.testing.assert_close(scripted, eager)


class PairsOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :6].reshape(-1, 3, 2)


class NanOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * float("nan")


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (PairsOutput(), r"returned output of shape \(1, 3, 2\), expected"),
        (NanOutput(), "returned NaN or infinite logits"),
    ],
)
def test_torchscript_bad_output_rejected(tmp_path, module, message):
    script_and_save(module, tmp_path / "bad.pt")
    spec = write_spec(tmp_path, "bad", "bad.pt", **DIGITS_SCRIPTED_SPEC)

    with pytest.raises(ModelSpecError, match=message):
        load_model(str(spec))


def test_corrupt_torchscript_rejected(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not a zip archive")
    spec = write_spec(tmp_path, "broken", "broken.pt", **DIGITS_SCRIPTED_SPEC)

    with pytest.raises(ModelSpecError, match="could not be loaded"):
        load_model(str(spec))


def test_builtin_format_needs_safetensors(tmp_path):
    torch.save(digits_network().state_dict(), tmp_path / "digits.pt")
    fields = {**DIGITS_SCRIPTED_SPEC, "format": "builtin", "arch": "small_cnn"}
    spec = write_spec(tmp_path, "digits", "digits.pt", **fields)

    with pytest.raises(ModelSpecError, match="builtin models load safetensors only"):
        load_model(str(spec))


def test_builtin_model_loads(digits_model):
    assert digits_model.reference == "builtin:digits_cnn"
    assert digits_model.spec.num_classes == 10
    assert digits_model.class_name(3) == "3"
    assert digits_model.model.training is False
    assert all(p.requires_grad for p in digits_model.model.parameters())
