"""Each map metric on hand-made maps whose value is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.audit.metrics import compare_maps, default_k
from worker.audit.metrics.center_of_mass import center_of_mass, center_of_mass_shift
from worker.audit.metrics.rank_correlation import kendall_tau, spearman
from worker.audit.metrics.similarity import pearson, ssim
from worker.audit.metrics.topk import topk_intersection, topk_mask


def distinct_map(height: int = 8, width: int = 8, seed: int = 0) -> torch.Tensor:
    """An (H, W) map whose values are a random permutation of 1..H*W: no ties."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randperm(height * width, generator=generator) + 1).float().view(height, width)


def test_identical_maps_score_perfectly():
    original = distinct_map()
    result = compare_maps(original, original.clone(), k=10)

    assert result.topk_intersection == 1.0
    assert result.spearman == pytest.approx(1.0, abs=1e-12)
    assert result.kendall_tau == pytest.approx(1.0, abs=1e-12)
    assert result.pearson == pytest.approx(1.0, abs=1e-12)
    assert result.ssim == pytest.approx(1.0, abs=1e-9)
    assert result.center_of_mass_shift == 0.0


def test_reversed_ranks_score_minus_one():
    original = torch.arange(64, dtype=torch.float32).view(8, 8) + 1
    reversed_ranks = 65 - original
    result = compare_maps(original, reversed_ranks, k=10)

    assert result.spearman == pytest.approx(-1.0, abs=1e-12)
    assert result.kendall_tau == pytest.approx(-1.0, abs=1e-12)
    assert result.pearson == pytest.approx(-1.0, abs=1e-12)
    assert result.topk_intersection == 0.0


def test_moved_point_mass_shifts_center():
    original = torch.zeros(9, 9)
    original[2, 3] = 1.0
    moved = torch.zeros(9, 9)
    moved[5, 7] = 1.0
    result = compare_maps(original, moved, k=1)

    # (2, 3) -> (5, 7): a 3-4-5 right triangle.
    assert result.center_of_mass_shift == pytest.approx(5.0, abs=1e-6)
    assert result.topk_intersection == 0.0


def test_center_of_mass_weighted_mean():
    saliency = torch.zeros(1, 5, 6)
    saliency[0, 0, 0] = 1.0
    saliency[0, 4, 4] = 3.0
    # rows: (0*1 + 4*3) / 4 = 3; columns: (0*1 + 4*3) / 4 = 3.
    torch.testing.assert_close(center_of_mass(saliency), torch.tensor([[3.0, 3.0]]))


def test_center_of_mass_zero_map_is_image_center():
    center = center_of_mass(torch.zeros(2, 5, 8))

    torch.testing.assert_close(center, torch.tensor([[2.0, 3.5], [2.0, 3.5]]))
    assert torch.isfinite(center).all()


def test_center_shift_uses_absolute_values_of_signed_maps():
    original = torch.zeros(7, 7)
    original[1, 1] = -2.0
    perturbed = torch.zeros(7, 7)
    perturbed[1, 4] = 5.0

    assert compare_maps(original, perturbed, k=1).center_of_mass_shift == pytest.approx(3.0)


def test_topk_intersection_partial_overlap():
    original = torch.arange(16, dtype=torch.float32).view(1, 4, 4)
    perturbed = original.clone().view(-1)
    # The top 4 of the original are pixels 12..15; move 12 and 13 to the bottom and raise 0, 1.
    perturbed[12], perturbed[0] = perturbed[0].item(), perturbed[12].item()
    perturbed[13], perturbed[1] = perturbed[1].item(), perturbed[13].item()
    perturbed = perturbed.view(1, 4, 4)

    assert topk_intersection(original, perturbed, 4).tolist() == [0.5]
    assert topk_intersection(original, perturbed, 2).tolist() == [1.0]  # pixels 14, 15 stay
    assert topk_intersection(original, perturbed, 16).tolist() == [1.0]


def test_topk_mask_batch():
    maps = torch.stack([torch.arange(9.0).view(3, 3), -torch.arange(9.0).view(3, 3)])
    mask = topk_mask(maps, 2)

    assert mask.shape == (2, 3, 3)
    assert mask[0].nonzero().tolist() == [[2, 1], [2, 2]]
    assert mask[1].nonzero().tolist() == [[0, 0], [0, 1]]


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_constant_map_correlations_are_zero():
    constant = np.ones((6, 6))
    varying = np.arange(36.0).reshape(6, 6)

    assert spearman(constant, varying) == 0.0
    assert kendall_tau(constant, varying) == 0.0
    assert pearson(constant, varying) == 0.0
    assert not math.isnan(compare_maps(torch.ones(6, 6), torch.ones(6, 6), k=3).spearman)


def test_ssim_rejects_maps_under_three_pixels():
    with pytest.raises(ValueError, match="3x3"):
        ssim(np.ones((2, 8)), np.ones((2, 8)))


def test_ssim_is_scale_invariant():
    original = distinct_map().numpy()

    assert ssim(original, 7.0 * original) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(
    ("original", "perturbed", "k", "message"),
    [
        (torch.ones(4, 4), torch.ones(4, 5), 2, "same shape"),
        (torch.ones(16), torch.ones(16), 2, "same shape"),
        (torch.ones(4, 4), torch.ones(4, 4), 0, "k must be between 1 and"),
        (torch.ones(4, 4), torch.ones(4, 4), 17, "got 17"),
    ],
)
def test_compare_maps_rejects_bad_input(original, perturbed, k, message):
    with pytest.raises(ValueError, match=message):
        compare_maps(original, perturbed, k)


@pytest.mark.parametrize(
    ("height", "width", "expected"), [(32, 32, 20), (227, 227, 1031), (3, 3, 1)]
)
def test_default_k_two_percent(height, width, expected):
    assert default_k(height, width) == expected


def test_center_of_mass_shift_batch():
    original = torch.zeros(2, 4, 4)
    original[:, 0, 0] = 1.0
    perturbed = torch.zeros(2, 4, 4)
    perturbed[0, 0, 3] = 1.0
    perturbed[1, 3, 3] = 1.0

    torch.testing.assert_close(
        center_of_mass_shift(original, perturbed), torch.tensor([3.0, 3.0 * math.sqrt(2)])
    )
