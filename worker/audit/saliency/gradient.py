"""Simple gradient (Simonyan et al. 2014): d logit[target] / d input."""

from __future__ import annotations

import torch
from torch import nn


def input_gradient(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, create_graph: bool = False
) -> torch.Tensor:
    """Gradient of the target class's logit (pre-softmax) with respect to the inputs.

    Args:
        model: classifier returning (N, classes) logits.
        inputs: (N, C, H, W). When it does not require grad, a detached copy is used.
        target: (N,) int64 class indices.
        create_graph: keep the graph of the gradient so it can be differentiated again.

    Returns:
        (N, C, H, W) gradient. The samples are independent, so one backward pass of the summed
        logits gives every sample's gradient.
    """
    if not inputs.requires_grad:
        inputs = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(inputs)
        selected = logits.gather(1, target.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(selected, inputs, create_graph=create_graph)
    return gradient


def gradient_attributions(
    model: nn.Module, inputs: torch.Tensor, target: torch.Tensor, create_graph: bool = False
) -> torch.Tensor:
    """Simple-gradient attributions: (N, C, H, W), the input gradient itself."""
    return input_gradient(model, inputs, target, create_graph)
