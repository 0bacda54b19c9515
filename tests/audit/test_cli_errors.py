"""Bad input to ``fragility audit``, through the real command line in a subprocess.

Each case must end with a non-zero exit status, a single stderr line that names the bad value,
and no report.json under --out.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

SAMPLE = Path(__file__).resolve().parents[2] / "models/builtin/samples/digits_cnn_3_0649.png"

SCRIPTED_SPEC = {
    "format": "torchscript",
    "num_classes": 10,
    "channels": 1,
    "input_size": [32, 32],
    "mean": [0.5],
    "std": [0.25],
}


class PairsOutput(nn.Module):
    """Returns (N, 3, 2) instead of (N, classes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :6].reshape(-1, 3, 2)


class NanOutput(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * float("nan")


class NanOnImages(nn.Module):
    """Finite on the loader's uniform gray probe, NaN on any real image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.flatten(1)[:, :10]
        if bool(x.std() == 0):
            return logits
        return logits * float("nan")


class MarkerOnUnpickle:
    """Pickles as a call that creates a directory, so running it leaves evidence."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height 8-bit gray pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write_spec(directory: Path, name: str, weights: str, fields: dict) -> Path:
    path = directory / f"{name}.json"
    path.write_text(json.dumps({**fields, "weights": weights}))
    return path


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """Every bad file of the cases below, written once."""
    directory = tmp_path_factory.mktemp("bad")
    files = {}

    files["empty"] = directory / "empty.png"
    files["empty"].write_bytes(b"")
    files["truncated"] = directory / "truncated.png"
    files["truncated"].write_bytes(SAMPLE.read_bytes()[: SAMPLE.stat().st_size // 2])
    files["text"] = directory / "notes.png"
    files["text"].write_text("this is a text file, not an image\n")
    files["bomb"] = directory / "bomb.png"
    files["bomb"].write_bytes(png_header_only(20000, 20000))

    resnet = {
        "format": "torchvision",
        "arch": "resnet18",
        "num_classes": 10,
        "channels": 3,
        "input_size": [64, 64],
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    five_classes = torchvision.models.resnet18(num_classes=5).state_dict()
    save_file(
        {key: value.contiguous() for key, value in five_classes.items()},
        str(directory / "five.safetensors"),
    )
    files["wrong_shape"] = write_spec(directory, "resnet_wrong", "five.safetensors", resnet)

    files["marker"] = directory / "unpickled-marker"
    payload = {"fc.weight": torch.zeros(10, 512), "hook": MarkerOnUnpickle(files["marker"])}
    torch.save(payload, directory / "pickled.pt")
    files["pickled"] = write_spec(directory, "resnet_pickled", "pickled.pt", resnet)

    for name, module in (
        ("pairs", PairsOutput()),
        ("nan", NanOutput()),
        ("nan_img", NanOnImages()),
    ):
        with warnings.catch_warnings():
            # torch 2.14 marks TorchScript as deprecated; it is still a supported input format.
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(module), str(directory / f"{name}.pt"))
        files[name] = write_spec(directory, name, f"{name}.pt", SCRIPTED_SPEC)
    return files


# case id -> (function of the bad files -> (image, extra options, environment), expected text)
CASES = {
    "empty image": (
        lambda f: (f["empty"], [], {}),
        ["'empty.png'", "empty (0 bytes)"],
    ),
    "truncated image": (
        lambda f: (f["truncated"], [], {}),
        ["'truncated.png'", "truncated"],
    ),
    "text file": (
        lambda f: (f["text"], [], {}),
        ["'notes.png'", "not a recognised image"],
    ),
    "bomb header": (
        lambda f: (f["bomb"], [], {}),
        ["'bomb.png'", "400000000 pixels", "downscale"],
    ),
    "over pixel limit": (
        lambda f: (SAMPLE, [], {"FRAGILITY_MAX_IMAGE_PIXELS": "1000"}),
        ["32x32 = 1024 pixels", "over the limit of 1000", "FRAGILITY_MAX_IMAGE_PIXELS"],
    ),
    "weights wrong shape": (
        lambda f: (SAMPLE, ["--model", f["wrong_shape"]], {}),
        ["five.safetensors", "does not match architecture 'resnet18'", "num_classes"],
    ),
    "weights pickled object": (
        lambda f: (SAMPLE, ["--model", f["pickled"]], {}),
        ["pickled.pt", "contains pickled Python objects", "safetensors"],
    ),
    "output not (N, classes)": (
        lambda f: (SAMPLE, ["--model", f["pairs"]], {}),
        ["pairs.json", "(1, 3, 2)", "(N, num_classes)"],
    ),
    "output NaN": (
        lambda f: (SAMPLE, ["--model", f["nan"]], {}),
        ["nan.json", "NaN"],
    ),
    "output NaN on image": (
        lambda f: (SAMPLE, ["--model", f["nan_img"]], {}),
        ["nan_img.json", "NaN", "input image"],
    ),
    "epsilon zero": (
        lambda f: (SAMPLE, ["--epsilon", "0"], {}),
        ["epsilon", "(0, 1]", "got 0"],
    ),
    "epsilon negative": (
        lambda f: (SAMPLE, ["--epsilon=-8/255"], {}),
        ["epsilon", "(0, 1]", "got -0.03"],
    ),
    "epsilon over one": (
        lambda f: (SAMPLE, ["--epsilon", "1.5"], {}),
        ["epsilon", "(0, 1]", "got 1.5"],
    ),
    "k over pixels": (
        lambda f: (SAMPLE, ["--k", "5000"], {}),
        ["k=5000", "1..1024", "--k"],
    ),
    "unknown method": (
        lambda f: (SAMPLE, ["--method", "gradcam"], {}),
        ["method", "'gradcam'", "'integrated_gradients'"],
    ),
    "unknown attack": (
        lambda f: (SAMPLE, ["--attack", "pgd"], {}),
        ["attack", "'pgd'", "'center_of_mass'"],
    ),
    "unknown builtin": (
        lambda f: (SAMPLE, ["--model", "builtin:mnist"], {}),
        ["'mnist'", "builtin:digits_cnn"],
    ),
}


@pytest.fixture(scope="module")
def outcomes(bad, run_fragility, tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """Run every case once, two at a time (most of each run is importing torch)."""
    root = tmp_path_factory.mktemp("outs")

    def run_case(case: str) -> tuple[Path, object]:
        make_arguments, _ = CASES[case]
        image, options, env = make_arguments(bad)
        if "--model" not in options:
            options = [*options, "--model", "builtin:digits_cnn"]
        out = root / case.replace(" ", "_")
        result = run_fragility("audit", image, *options, "--steps", "2", "--out", out, env=env)
        return out, result

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(run_case, CASES), strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_rejected(outcomes, bad, case):
    out, result = outcomes[case]
    _, expected = CASES[case]

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fragility audit: error: ")
    for text in expected:
        assert text in lines[0]
    assert list(out.rglob("report.json")) == []
    assert not bad["marker"].exists(), "the pickled object's __reduce__ ran"
