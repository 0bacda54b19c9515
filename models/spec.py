"""The JSON model spec and the `builtin:NAME` references, parsed without importing torch.

A spec file looks like::

    {"format": "torchvision", "arch": "resnet18", "weights": "resnet18.safetensors",
     "num_classes": 10, "channels": 3, "input_size": [224, 224],
     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
     "class_names": ["airplane", ...]}

``weights`` is relative to the spec file. For ``format: torchscript`` it is the scripted model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
BUILTIN_PREFIX = "builtin:"


class ModelSpecError(ValueError):
    """A model reference or spec that cannot be used; the message names the value and the fix."""


class ModelSpec(BaseModel):
    """What the loader needs to build and wrap a classifier.

    Attributes:
        format: "torchvision" (architecture from torchvision plus a state_dict), "torchscript"
            (a scripted module) or "builtin" (an architecture defined in models/architectures.py).
        arch: torchvision or builtin architecture name; ignored for torchscript.
        weights: weights file, relative to the spec file.
        num_classes: length of the model's output vector.
        channels: 1 (gray) or 3 (RGB) input channels.
        input_size: [height, width] in pixels that images are resized to.
        mean, std: per-channel normalisation applied inside the wrapped model to [0, 1] inputs.
        class_names: optional names, one per class.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["torchvision", "torchscript", "builtin"]
    arch: str | None = None
    weights: str = Field(min_length=1)
    num_classes: int = Field(ge=2, le=100_000)
    channels: Literal[1, 3]
    input_size: tuple[int, int]
    mean: list[float]
    std: list[float]
    class_names: list[str] | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelSpec:
        if self.format != "torchscript" and not self.arch:
            raise ValueError(f"'arch' is required for format {self.format!r}")
        height, width = self.input_size
        if not (8 <= height <= 4096 and 8 <= width <= 4096):
            raise ValueError(
                f"input_size must be [H, W] with 8 <= H, W <= 4096, got {[height, width]}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.channels:
                raise ValueError(
                    f"{name} must have one value per channel ({self.channels}), got {values}"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but num_classes is "
                f"{self.num_classes}"
            )
        return self


class ResolvedSpec(BaseModel):
    """A parsed spec with its source: the reference given and the absolute weights path."""

    reference: str
    spec_path: Path
    weights_path: Path
    spec: ModelSpec


def list_builtin_models() -> dict[str, Path]:
    """Return {name: spec path} of the models shipped in models/builtin/."""
    return {path.stem: path for path in sorted(BUILTIN_DIR.glob("*.json"))}


def read_spec(path: Path, reference: str | None = None) -> ResolvedSpec:
    """Parse and validate a JSON model spec file.

    Raises:
        ModelSpecError: the file is missing, not JSON, has invalid fields, or its weights file is
            missing. The message names the file and the field.
    """
    reference = reference or str(path)
    if not path.is_file():
        raise ModelSpecError(f"model spec {str(path)!r} not found; give an existing JSON spec file")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelSpecError(f"model spec {str(path)!r} is not valid JSON: {error}") from None
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'spec'}: {item['msg']}"
            for item in error.errors()
        )
        raise ModelSpecError(f"model spec {str(path)!r} is invalid: {details}") from None
    weights_path = (path.parent / spec.weights).resolve()
    if not weights_path.is_file():
        raise ModelSpecError(
            f"weights file {str(weights_path)!r} named by model spec {str(path)!r} not found; "
            "'weights' is relative to the spec file"
        )
    return ResolvedSpec(
        reference=reference, spec_path=path.resolve(), weights_path=weights_path, spec=spec
    )


def resolve_reference(reference: str) -> ResolvedSpec:
    """Resolve 'builtin:NAME' or a spec path into a validated spec.

    Raises:
        ModelSpecError: unknown builtin name (the known ones are listed) or an invalid spec.
    """
    if reference.startswith(BUILTIN_PREFIX):
        name = reference[len(BUILTIN_PREFIX) :]
        builtins = list_builtin_models()
        if name not in builtins:
            known = ", ".join(f"builtin:{n}" for n in builtins) or "none"
            raise ModelSpecError(f"unknown builtin model {name!r}; known: {known}")
        return read_spec(builtins[name], reference)
    return read_spec(Path(reference), reference)
