"""Centre of mass of a saliency map and its shift, in pixels."""

from __future__ import annotations

import torch


def center_of_mass(maps: torch.Tensor) -> torch.Tensor:
    """(row, column) centre of mass of non-negative maps (N, H, W) -> (N, 2), in pixels.

    Pixel (i, j) sits at coordinates (i, j). A map that sums to zero has its centre at the
    image centre, so that it never produces NaN.
    """
    _, height, width = maps.shape
    rows = torch.arange(height, dtype=maps.dtype, device=maps.device)
    cols = torch.arange(width, dtype=maps.dtype, device=maps.device)
    total = maps.sum(dim=(1, 2))  # (N,)
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    row = (maps.sum(2) * rows).sum(1) / safe_total
    col = (maps.sum(1) * cols).sum(1) / safe_total
    center = torch.stack([row, col], dim=1)
    middle = torch.tensor([(height - 1) / 2, (width - 1) / 2], dtype=maps.dtype, device=maps.device)
    return torch.where((total > 0).unsqueeze(1), center, middle.expand_as(center))


def center_of_mass_shift(original: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """Euclidean distance in pixels between the centres of mass of two (N, H, W) maps: (N,)."""
    return (center_of_mass(original) - center_of_mass(perturbed)).norm(dim=1)
