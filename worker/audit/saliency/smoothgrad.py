"""SmoothGrad (Smilkov et al. 2017): the input gradient averaged over Gaussian-noised copies."""

from __future__ import annotations

import torch
from torch import nn

from worker.audit.saliency.gradient import input_gradient


def smoothgrad_noise(
    shape: tuple[int, ...], samples: int, stdev: float, generator: torch.Generator
) -> torch.Tensor:
    """Draw the noise of ``samples`` copies: (samples, *shape), N(0, stdev^2) in pixel units.

    The attacks draw it once and reuse it at every step, so the map they differentiate is a
    deterministic function of the input.
    """
    return torch.randn((samples, *shape), generator=generator) * stdev


def smoothgrad_attributions(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    noise: torch.Tensor,
    create_graph: bool = False,
) -> torch.Tensor:
    """Mean input gradient over ``inputs + noise[s]``: (N, C, H, W).

    Args:
        inputs: (N, C, H, W) in [0, 1].
        noise: (S, N, C, H, W). The noisy copies are not clipped to [0, 1], as in Captum's
            NoiseTunnel.
    """
    samples = noise.shape[0]
    noisy = (inputs.unsqueeze(0) + noise.to(inputs)).flatten(0, 1)  # (S*N, C, H, W)
    if not create_graph:
        noisy = noisy.detach()
    gradients = input_gradient(model, noisy, target.repeat(samples), create_graph)
    return gradients.view(samples, *inputs.shape).mean(0)
