"""Dispatch to a saliency method and reduce its attributions to a map."""

from __future__ import annotations

import torch
from torch import nn

from worker.audit.saliency.config import SaliencyConfig
from worker.audit.saliency.gradient import gradient_attributions
from worker.audit.saliency.gradient_x_input import gradient_x_input_attributions
from worker.audit.saliency.integrated_gradients import (
    ig_baseline,
    integrated_gradients_attributions,
)
from worker.audit.saliency.smoothgrad import smoothgrad_attributions


def attributions(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    config: SaliencyConfig,
    create_graph: bool = False,
    noise: torch.Tensor | None = None,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-channel attributions of the method in ``config``: (N, C, H, W).

    Args:
        model: classifier taking (N, C, H, W) inputs in [0, 1].
        inputs: (N, C, H, W) in [0, 1].
        target: (N,) class indices whose logit is explained.
        create_graph: keep the graph so the result can be differentiated with respect to inputs.
        noise: (S, N, C, H, W) SmoothGrad noise; required for "smoothgrad".
        mean: (1, C, 1, 1) normalisation mean, for the "mean" integrated-gradients baseline.
    """
    if config.method == "gradient":
        return gradient_attributions(model, inputs, target, create_graph)
    if config.method == "gradient_x_input":
        return gradient_x_input_attributions(model, inputs, target, create_graph)
    if config.method == "integrated_gradients":
        baseline = ig_baseline(inputs.detach(), config.ig_baseline, mean)
        return integrated_gradients_attributions(
            model, inputs, target, baseline, config.ig_steps, create_graph
        )
    if config.method == "smoothgrad":
        if noise is None:
            raise ValueError("method 'smoothgrad' needs its noise tensor (S, N, C, H, W)")
        return smoothgrad_attributions(model, inputs, target, noise, create_graph)
    raise ValueError(
        "method must be 'gradient', 'gradient_x_input', 'integrated_gradients' or 'smoothgrad', "
        f"got {config.method!r}"
    )


def reduce_channels(attribution: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """Sum (N, C, H, W) attributions over channels: of absolute values, or signed. -> (N, H, W)."""
    return attribution.sum(1) if signed else attribution.abs().sum(1)


def saliency_map(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    config: SaliencyConfig,
    create_graph: bool = False,
    noise: torch.Tensor | None = None,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Saliency map (N, H, W) of the method in ``config``; see ``attributions`` for arguments."""
    attribution = attributions(model, inputs, target, config, create_graph, noise, mean)
    return reduce_channels(attribution, config.signed)
