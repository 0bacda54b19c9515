"""Integrated gradients (Sundararajan et al. 2017) with Gauss-Legendre quadrature."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from worker.audit.saliency.gradient import input_gradient


def gauss_legendre_on_unit_interval(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (alphas, weights) of the ``steps``-point Gauss-Legendre rule mapped to [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1.0) / 2.0, weights / 2.0


def ig_baseline(inputs: torch.Tensor, kind: str, mean: torch.Tensor | None) -> torch.Tensor:
    """Return the baseline image for ``kind``: "black", "white" or "mean" (needs ``mean``)."""
    if kind == "black":
        return torch.zeros_like(inputs)
    if kind == "white":
        return torch.ones_like(inputs)
    if kind == "mean":
        if mean is None:
            raise ValueError("ig_baseline 'mean' needs the model's normalisation mean")
        return mean.to(inputs).expand_as(inputs).clone()
    raise ValueError(f"ig_baseline must be 'black', 'mean' or 'white', got {kind!r}")


def integrated_gradients_attributions(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor,
    steps: int = 50,
    create_graph: bool = False,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """(inputs - baseline) times the path integral of the input gradient, (N, C, H, W).

    Args:
        inputs: (N, C, H, W) in [0, 1].
        baseline: (N, C, H, W), the path's start.
        steps: quadrature points. Default 50, as Captum.
        internal_batch_size: path points per forward pass, which bounds memory when
            ``create_graph`` is False. With ``create_graph`` every chunk's graph is kept until
            the caller's backward pass, so memory grows with ``steps`` regardless.
    """
    alphas, weights = gauss_legendre_on_unit_interval(steps)
    alphas_t = torch.as_tensor(alphas, dtype=inputs.dtype, device=inputs.device)
    weights_t = torch.as_tensor(weights, dtype=inputs.dtype, device=inputs.device)
    difference = inputs - baseline
    batch = inputs.shape[0]
    chunk = max(1, internal_batch_size // batch)
    total = torch.zeros_like(inputs)
    for start in range(0, steps, chunk):
        a = alphas_t[start : start + chunk].view(-1, 1, 1, 1, 1)  # (S, 1, 1, 1, 1)
        path = (baseline.unsqueeze(0) + a * difference.unsqueeze(0)).flatten(0, 1)  # (S*N, C, H, W)
        if not create_graph:
            path = path.detach()  # input_gradient then differentiates a fresh leaf
        gradients = input_gradient(model, path, target.repeat(a.shape[0]), create_graph)
        gradients = gradients.view(a.shape[0], batch, *inputs.shape[1:])  # (S, N, C, H, W)
        w = weights_t[start : start + chunk].view(-1, 1, 1, 1, 1)
        total = total + (w * gradients).sum(0)
    return difference * total
