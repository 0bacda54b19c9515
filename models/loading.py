"""Load a classifier from a model reference and wrap it so that it takes [0, 1] pixel inputs.

Nothing here unpickles a user file: weights are read with safetensors or with
``torch.load(weights_only=True)``, and TorchScript archives with ``torch.jit.load``.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.architectures import build_architecture
from models.hashing import file_sha256
from models.spec import ModelSpec, ModelSpecError, ResolvedSpec, resolve_reference

logger = logging.getLogger(__name__)


class NormalizedClassifier(nn.Module):
    """A classifier that normalises its [0, 1] input by mean and std before the wrapped network.

    Keeping the normalisation inside the model puts images, perturbations and epsilon in the same
    [0, 1] pixel units.

    Shapes: input (N, C, H, W) in [0, 1]; output (N, num_classes) logits.
    """

    def __init__(self, network: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network((inputs - self.mean) / self.std)


@dataclass
class LoadedModel:
    """A wrapped classifier in eval mode and what the report records about it.

    Attributes:
        model: NormalizedClassifier taking (N, C, H, W) inputs in [0, 1].
        spec: the validated spec.
        reference: the reference the user gave ('builtin:NAME' or a spec path).
        weights_sha256: SHA-256 of the weights (or TorchScript) file.
        spec_sha256: SHA-256 of the spec file.
        scripted: True for TorchScript models, whose activations cannot be replaced.
    """

    model: NormalizedClassifier
    spec: ModelSpec
    reference: str
    weights_sha256: str
    spec_sha256: str
    scripted: bool

    def class_name(self, index: int) -> str:
        """Return the class name of ``index``, or the index as text when the spec has no names."""
        names = self.spec.class_names
        return names[index] if names else str(index)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from safetensors or from a torch.save file with weights_only=True."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelSpecError(
                f"weights file {str(path)!r} is not a valid safetensors file ({error}); "
                "save it with safetensors.torch.save_file(model.state_dict(), path)"
            ) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is several paragraphs with terminal escape codes; only the name of
        # the rejected Python object helps the user.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        rejected = f" (it references {found.group(1)})" if found else ""
        raise ModelSpecError(
            f"weights file {str(path)!r} contains pickled Python objects{rejected}, which are "
            "never unpickled; save only the state_dict (torch.save(model.state_dict(), path)) "
            "or use safetensors"
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        # torch's weights-only unpickler also raises these on corrupt or non-pickle bytes
        # (a text file raises IndexError with torch 2.14).
        IndexError,
        KeyError,
        AssertionError,
    ) as error:
        message = " ".join(str(error).split())[:300]
        raise ModelSpecError(
            f"weights file {str(path)!r} could not be read by torch.load "
            f"({type(error).__name__}: {message}); "
            "give a state_dict saved with torch.save or a safetensors file"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ModelSpecError(
            f"weights file {str(path)!r} does not contain a state_dict (a mapping of names to "
            "tensors); save it with torch.save(model.state_dict(), path)"
        )
    return state


def _load_state_dict(
    network: nn.Module, state: dict[str, torch.Tensor], resolved: ResolvedSpec
) -> None:
    """Load ``state`` strictly and turn key or shape mismatches into a readable error."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        # The error lists every missing and unexpected key; the first lines are enough to act on.
        summary = " ".join(str(error).split())[:400]
        raise ModelSpecError(
            f"weights file {str(resolved.weights_path)!r} does not match architecture "
            f"{resolved.spec.arch!r} with num_classes={resolved.spec.num_classes}: {summary}; "
            "check 'arch' and 'num_classes' in the spec"
        ) from None


def _build_network(resolved: ResolvedSpec) -> nn.Module:
    """Build the unwrapped network described by the spec and load its weights."""
    spec = resolved.spec
    if spec.format == "torchscript":
        try:
            with warnings.catch_warnings():
                # torch 2.14 warns that TorchScript is deprecated on every load; the warning
                # would turn the CLI's one-line messages into three lines.
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(resolved.weights_path), map_location="cpu")
        except (RuntimeError, ValueError) as error:
            message = " ".join(str(error).split())[:300]
            raise ModelSpecError(
                f"TorchScript file {str(resolved.weights_path)!r} could not be loaded ({message}); "
                "save it with torch.jit.save(torch.jit.script(model), path)"
            ) from None

    assert spec.arch is not None  # enforced by ModelSpec's validator for these formats
    if spec.format == "builtin":
        if resolved.weights_path.suffix != ".safetensors":
            raise ModelSpecError(
                f"builtin models load safetensors only, got {str(resolved.weights_path)!r}"
            )
        try:
            network = build_architecture(spec.arch, spec.num_classes, spec.channels)
        except ValueError as error:
            raise ModelSpecError(str(error)) from None
    else:
        import torchvision

        known = set(torchvision.models.list_models())
        if spec.arch not in known:
            raise ModelSpecError(
                f"unknown torchvision architecture {spec.arch!r}; use a name from "
                "torchvision.models.list_models(), for example 'resnet18'"
            )
        network = torchvision.models.get_model(
            spec.arch, weights=None, num_classes=spec.num_classes
        )
    _load_state_dict(network, _read_state_dict(resolved.weights_path), resolved)
    return network


def check_model_output(model: nn.Module, spec: ModelSpec, reference: str) -> None:
    """Run one forward pass on a gray image and check the output is (1, num_classes) and finite.

    Raises:
        ModelSpecError: wrong output shape or non-finite values, naming the reference.
    """
    height, width = spec.input_size
    probe = torch.full((1, spec.channels, height, width), 0.5)
    with torch.no_grad():
        try:
            output = model(probe)
        except RuntimeError as error:
            message = " ".join(str(error).split())[:300]
            raise ModelSpecError(
                f"model {reference!r} failed on a (1, {spec.channels}, {height}, {width}) input "
                f"({message}); check 'channels' and 'input_size' in the spec"
            ) from None
    if not isinstance(output, torch.Tensor) or tuple(output.shape) != (1, spec.num_classes):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelSpecError(
            f"model {reference!r} returned output of shape {shape}, expected "
            f"(N, num_classes) = (1, {spec.num_classes}); the model must return logits"
        )
    if not torch.isfinite(output).all():
        raise ModelSpecError(
            f"model {reference!r} returned NaN or infinite logits on a gray input; "
            "check the weights file"
        )


def load_model(reference: str, device: torch.device | str = "cpu") -> LoadedModel:
    """Load the model named by ``reference`` ('builtin:NAME' or a JSON spec path).

    The returned model is in eval mode, on ``device``, with normalisation inside, and has been
    checked to return finite (1, num_classes) logits.

    Raises:
        ModelSpecError: any problem with the reference, the spec, the weights or the output.
    """
    resolved = resolve_reference(reference)
    network = _build_network(resolved)
    model = NormalizedClassifier(network, resolved.spec.mean, resolved.spec.std).eval()
    check_model_output(model, resolved.spec, reference)
    loaded = LoadedModel(
        model=model.to(device),
        spec=resolved.spec,
        reference=reference,
        weights_sha256=file_sha256(resolved.weights_path),
        spec_sha256=file_sha256(resolved.spec_path),
        scripted=resolved.spec.format == "torchscript",
    )
    logger.info(
        "loaded model %s (%s, %s) sha256=%s",
        reference,
        resolved.spec.format,
        resolved.spec.arch or "scripted",
        loaded.weights_sha256[:12],
    )
    return loaded
