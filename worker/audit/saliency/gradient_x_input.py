"""Gradient x input (Shrikumar et al. 2016), with the input in [0, 1] pixel units."""

from __future__ import annotations

import torch
from torch import nn

from worker.audit.saliency.gradient import input_gradient


def gradient_x_input_attributions(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, create_graph: bool = False
) -> torch.Tensor:
    """Input gradient times the input, elementwise: (N, C, H, W).

    The input is in pixel units, before the model's normalisation, so this matches Captum's
    InputXGradient applied to the wrapped model.
    """
    if not inputs.requires_grad:
        inputs = inputs.detach().requires_grad_(True)
    return input_gradient(model, inputs, target, create_graph) * inputs
