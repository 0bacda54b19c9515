"""Targeted attack (Ghorbani et al. 2019): raise the saliency inside a given region."""

from __future__ import annotations

import torch

from worker.audit.attacks.base import AttackProblem, ExplanationAttack


def mass_inside(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of each map's absolute total inside ``mask``: (N,) in [0, 1]."""
    maps = maps.abs()
    return (maps * mask).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp_min(1e-12)


class TargetedAttack(ExplanationAttack):
    """Maximise the share of the map inside the target mask; selection by the same share."""

    name = "targeted"

    def __init__(self, problem: AttackProblem) -> None:
        super().__init__(problem)
        if problem.target_mask is None:
            raise ValueError("the 'targeted' attack needs a target region (target_box or a mask)")
        self.mask = problem.target_mask

    def loss(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        return mass_inside(maps, self.mask)

    def dissimilarity(self, maps: torch.Tensor) -> torch.Tensor:
        return mass_inside(maps, self.mask)
