"""Random-sign baseline: the same loop and selection, with random directions."""

from __future__ import annotations

import torch

from worker.audit.attacks.base import ExplanationAttack


class RandomSignAttack(ExplanationAttack):
    """Step along fresh sign(N(0, 1)) directions; select with another attack's dissimilarity.

    Using the compared attack's selection rule makes the baseline measure "how far does the map
    move under a random perturbation of the same size, chosen by the same rule".

    Args:
        criterion: the attack whose dissimilarity selects the returned iterate.
    """

    name = "random"
    uses_gradient = False

    def __init__(self, criterion: ExplanationAttack) -> None:
        super().__init__(criterion.problem)
        self.criterion = criterion

    def loss(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the random baseline has no loss; it never differentiates")

    def direction(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        never_unusable = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return self.problem.random_signs(), never_unusable

    def dissimilarity(self, maps: torch.Tensor) -> torch.Tensor:
        return self.criterion.dissimilarity(maps)
