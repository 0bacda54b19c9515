"""Architectures of the bundled models, referenced by ``"format": "builtin"`` specs."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """Three 3x3 convolution blocks and a linear classifier, for 32x32 inputs.

    The first two activations are ``nn.ReLU`` modules and the third is a functional ``F.relu``
    call, so the smooth surrogate has to handle both kinds.

    Args:
        num_classes: number of output logits.
        channels: input channels (1 or 3).
        width: channels of the first convolution; later blocks use 2x and 4x.

    Shapes: input (N, channels, H, W) normalised; output (N, num_classes) logits.
    """

    def __init__(self, num_classes: int, channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv1(x)))  # (N, w, H/2, W/2)
        x = self.pool(self.relu2(self.conv2(x)))  # (N, 2w, H/4, W/4)
        x = F.relu(self.conv3(x))  # (N, 4w, H/4, W/4)
        x = x.mean(dim=(2, 3))  # global average pool: (N, 4w)
        return self.classifier(x)


ARCHITECTURES: dict[str, Callable[[int, int], nn.Module]] = {
    "small_cnn": lambda num_classes, channels: SmallCNN(num_classes, channels),
}


def build_architecture(name: str, num_classes: int, channels: int) -> nn.Module:
    """Instantiate the builtin architecture ``name`` with random weights.

    Raises:
        ValueError: ``name`` is not a builtin architecture; the message lists the known ones.
    """
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown builtin architecture {name!r}; known: {known}")
    return ARCHITECTURES[name](num_classes, channels)
