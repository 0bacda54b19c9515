"""Centre-of-mass attack (Ghorbani et al. 2019): move the map's centre of mass away."""

from __future__ import annotations

import torch

from worker.audit.attacks.base import AttackProblem, ExplanationAttack
from worker.audit.metrics.center_of_mass import center_of_mass


class CenterOfMassAttack(ExplanationAttack):
    """Maximise ||C(x) - C(x0)||^2, the squared centre-of-mass shift in pixels.

    The gradient of this loss is zero at x0 itself, so the attack starts from one random-sign
    step of step_size away from x0. Selection: the largest centre-of-mass shift.
    """

    name = "center_of_mass"

    def __init__(self, problem: AttackProblem) -> None:
        super().__init__(problem)
        self.original_center = center_of_mass(problem.original_maps.abs())  # (N, 2)

    def start(self) -> torch.Tensor:
        return self.problem.inputs + self.problem.step_size * self.problem.random_signs()

    def loss(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        return (center_of_mass(maps.abs()) - self.original_center).pow(2).sum(1)

    def dissimilarity(self, maps: torch.Tensor) -> torch.Tensor:
        return (center_of_mass(maps.abs()) - self.original_center).norm(dim=1)
