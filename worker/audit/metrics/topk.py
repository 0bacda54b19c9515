"""Top-k intersection: the fraction of the original top-k pixels still in the top k."""

from __future__ import annotations

import torch


def topk_mask(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask (N, H, W) of each map's k largest pixels (ties broken by torch.topk)."""
    flat = maps.flatten(1)  # (N, H*W)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, flat.topk(k, dim=1).indices, True)
    return mask.view_as(maps)


def topk_intersection(original: torch.Tensor, perturbed: torch.Tensor, k: int) -> torch.Tensor:
    """|top-k(original) ∩ top-k(perturbed)| / k for each pair of maps.

    Args:
        original, perturbed: (N, H, W) maps.
        k: pixels in each top-k set, 1 <= k <= H*W.

    Returns:
        (N,) in [0, 1]; 1 means the same k pixels, 0 means none in common.
    """
    return topk_intersection_with_mask(topk_mask(original, k), perturbed, k)


def topk_intersection_with_mask(
    original_mask: torch.Tensor, perturbed: torch.Tensor, k: int
) -> torch.Tensor:
    """Top-k intersection against a precomputed original top-k mask (N, H, W): (N,)."""
    indices = perturbed.flatten(1).topk(k, dim=1).indices  # (N, k)
    hits = original_mask.flatten(1).gather(1, indices)
    return hits.float().sum(1) / k
