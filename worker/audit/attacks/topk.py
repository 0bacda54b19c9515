"""Top-k attack (Ghorbani et al. 2019): lower the saliency of the original top-k pixels."""

from __future__ import annotations

import torch

from worker.audit.attacks.base import AttackProblem, ExplanationAttack
from worker.audit.metrics.topk import topk_intersection_with_mask, topk_mask


class TopKAttack(ExplanationAttack):
    """Minimise the share of the map's total that falls on the original top-k pixels.

    The mask of the original top-k pixels is fixed at the start. Dividing by the map's total
    makes the loss independent of the map's scale, as the fixed-total rescaling in the paper
    does. Selection: the lowest top-k intersection.
    """

    name = "topk"

    def __init__(self, problem: AttackProblem) -> None:
        super().__init__(problem)
        self.mask = topk_mask(problem.original_maps, problem.k)  # (N, H, W) bool

    def loss(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        maps = maps.abs()
        inside = (maps * self.mask).flatten(1).sum(1)
        total = maps.flatten(1).sum(1).clamp_min(1e-12)
        return -inside / total

    def dissimilarity(self, maps: torch.Tensor) -> torch.Tensor:
        return -topk_intersection_with_mask(self.mask, maps, self.problem.k)
