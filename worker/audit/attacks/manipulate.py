"""Manipulation toward a target map (Dombrowski et al., NeurIPS 2019), inside the epsilon ball."""

from __future__ import annotations

import torch

from worker.audit.attacks.base import AttackProblem, ExplanationAttack


def normalize_to_unit_sum(maps: torch.Tensor) -> torch.Tensor:
    """Divide each absolute map (N, H, W) by its sum, as Dombrowski et al. do."""
    maps = maps.abs()
    return maps / maps.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1)


class ManipulateAttack(ExplanationAttack):
    """Minimise H*W ||h(x) - h_t||^2 + gamma ||g(x) - g(x0)||^2.

    h is the map normalised to sum 1, h_t the target (the target mask normalised to sum 1), g the
    softmax output and H*W the pixel count. Multiplying by H*W makes the map term about 1 for
    maps of any size; Dombrowski et al. weight the two terms 1e11 and 1e6 at 224x224, a ratio of
    the same order (1e5 against H*W = 50,176). Unlike their Adam run with no epsilon ball, this
    uses the shared sign-gradient loop bounded by epsilon. Selection: the smallest map distance
    to the target.

    Args:
        gamma: weight of the output term. Default 1.
    """

    name = "manipulate"

    def __init__(self, problem: AttackProblem, gamma: float = 1.0) -> None:
        super().__init__(problem)
        if problem.target_mask is None:
            raise ValueError("the 'manipulate' attack needs a target map (target_box or a mask)")
        if problem.original_probs is None:
            raise ValueError("the 'manipulate' attack needs the original softmax output")
        self.target_map = normalize_to_unit_sum(problem.target_mask)
        self.pixels = problem.target_mask[0].numel()
        self.gamma = gamma

    def map_distance(self, maps: torch.Tensor) -> torch.Tensor:
        """H*W times the squared distance of the normalised maps to the target: (N,)."""
        difference = normalize_to_unit_sum(maps) - self.target_map
        return self.pixels * difference.pow(2).flatten(1).sum(1)

    def loss(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        probs = self.problem.surrogate(x).softmax(1)
        output_term = (probs - self.problem.original_probs).pow(2).sum(1)
        return -(self.map_distance(maps) + self.gamma * output_term)

    def dissimilarity(self, maps: torch.Tensor) -> torch.Tensor:
        return -self.map_distance(maps)
