"""All metrics for one pair of saliency maps."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from worker.audit.metrics.center_of_mass import center_of_mass_shift
from worker.audit.metrics.rank_correlation import kendall_tau, spearman
from worker.audit.metrics.similarity import pearson, ssim
from worker.audit.metrics.topk import topk_intersection

DEFAULT_K_FRACTION = 0.02
"""Default top-k size as a fraction of the map's pixels: Ghorbani et al. used k = 1000 of
227 x 227 pixels, about 2%."""


def default_k(height: int, width: int) -> int:
    """Return about 2% of height x width pixels, at least 1."""
    return max(1, round(DEFAULT_K_FRACTION * height * width))


@dataclass
class MapComparison:
    """How far a perturbed map is from the original.

    Attributes:
        topk_intersection: fraction of the original top-k pixels still in the top k, in [0, 1].
        spearman: Spearman rank correlation, in [-1, 1].
        kendall_tau: Kendall's tau-b, in [-1, 1].
        center_of_mass_shift: distance between the maps' centres of mass, in pixels.
        ssim: structural similarity of the max-scaled maps, in [-1, 1].
        pearson: Pearson correlation, in [-1, 1].
    """

    topk_intersection: float
    spearman: float
    kendall_tau: float
    center_of_mass_shift: float
    ssim: float
    pearson: float

    def as_dict(self) -> dict[str, float]:
        """Return the metrics as a plain dict."""
        return asdict(self)


def compare_maps(original: torch.Tensor, perturbed: torch.Tensor, k: int) -> MapComparison:
    """Compute every metric between two (H, W) maps.

    Args:
        original, perturbed: (H, W) maps. The centre of mass uses absolute values, so signed
            maps are accepted.
        k: top-k size, 1 <= k <= H*W.

    Raises:
        ValueError: the shapes differ or k is out of range.
    """
    if original.shape != perturbed.shape or original.dim() != 2:
        raise ValueError(
            f"maps must both be (H, W) with the same shape, got {tuple(original.shape)} and "
            f"{tuple(perturbed.shape)}"
        )
    pixels = original.numel()
    if not 1 <= k <= pixels:
        raise ValueError(f"k must be between 1 and the map's {pixels} pixels, got {k}")
    a = original.detach().float().cpu()
    b = perturbed.detach().float().cpu()
    a_np, b_np = a.numpy(), b.numpy()
    return MapComparison(
        topk_intersection=float(topk_intersection(a[None], b[None], k)[0]),
        spearman=spearman(a_np, b_np),
        kendall_tau=kendall_tau(a_np, b_np),
        center_of_mass_shift=float(center_of_mass_shift(a.abs()[None], b.abs()[None])[0]),
        ssim=ssim(a_np, b_np),
        pearson=pearson(a_np, b_np),
    )
