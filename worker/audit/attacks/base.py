"""The projected sign-gradient loop shared by every attack on the explanation.

Each step (Ghorbani et al., AAAI 2019): x <- x0 + clip(x + step_size * direction - x0, -eps, eps),
then clip to [0, 1]. The direction is the sign of the gradient of the attack's loss on the
saliency map of the smooth surrogate. The iterate is then scored on the original model. An
iterate whose predicted label differs from the original is never selected, and the returned one
is the label-preserving iterate with the largest dissimilarity. Images in a batch are attacked
together but selected independently.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from worker.audit.saliency import SaliencyConfig, saliency_map
from worker.context import JobContext

logger = logging.getLogger(__name__)


@dataclass
class AttackProblem:
    """Everything an attack needs about the model, the inputs and the budget.

    Attributes:
        model: the original classifier; labels, maps and scores are computed on it.
        surrogate: the smooth surrogate used for attack gradients (the model itself when no
            surrogate could be built).
        config: the saliency method.
        inputs: (N, C, H, W) originals x0 in [0, 1].
        target: (N,) original predicted labels; the explained class throughout.
        original_maps: (N, H, W) maps of the originals on the original model.
        k: top-k size in pixels.
        epsilon: L-infinity budget in pixel units.
        step_size: step per iteration in pixel units.
        steps: iterations.
        generators: one torch.Generator per image, so an image's random draws do not depend on
            which other images share its batch.
        noise: (S, N, C, H, W) SmoothGrad noise, fixed for the whole attack, or None.
        mean: (1, C, 1, 1) normalisation mean, for the "mean" integrated-gradients baseline.
        target_mask: (N, H, W) float 0/1 region for the targeted and manipulate attacks.
        original_probs: (N, classes) softmax output on the originals.
    """

    model: nn.Module
    surrogate: nn.Module
    config: SaliencyConfig
    inputs: torch.Tensor
    target: torch.Tensor
    original_maps: torch.Tensor
    k: int
    epsilon: float
    step_size: float
    steps: int
    generators: list[torch.Generator]
    noise: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    target_mask: torch.Tensor | None = None
    original_probs: torch.Tensor | None = None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Project onto the L-infinity ball of radius epsilon around the inputs, then [0, 1]."""
        delta = (x - self.inputs).clamp(-self.epsilon, self.epsilon)
        return (self.inputs + delta).clamp(0.0, 1.0)

    def random_signs(self) -> torch.Tensor:
        """Draw sign(N(0, 1)) of the inputs' shape, each image from its own generator."""
        shape = self.inputs.shape[1:]
        draws = [torch.randn(shape, generator=g).sign() for g in self.generators]
        return torch.stack(draws).to(self.inputs)

    def evaluate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits (N, classes), maps (N, H, W)) of ``x`` on the original model."""
        x = x.detach()
        if self.config.method in ("gradient", "gradient_x_input"):
            # One forward pass gives both the labels and the gradient.
            leaf = x.clone().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(leaf)
                selected = logits.gather(1, self.target.view(-1, 1)).sum()
                (gradient,) = torch.autograd.grad(selected, leaf)
            attribution = gradient * x if self.config.method == "gradient_x_input" else gradient
            maps = attribution.sum(1) if self.config.signed else attribution.abs().sum(1)
            return logits.detach(), maps.detach()
        with torch.no_grad():
            logits = self.model(x)
        maps = saliency_map(self.model, x, self.target, self.config, False, self.noise, self.mean)
        return logits, maps.detach()

    def surrogate_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Maps (N, H, W) of ``x`` on the surrogate, differentiable with respect to ``x``."""
        return saliency_map(
            self.surrogate, x, self.target, self.config, True, self.noise, self.mean
        )


@dataclass
class AttackOutcome:
    """Result of one attack on a batch.

    Attributes:
        name: attack name.
        perturbed: (N, C, H, W) best label-preserving iterate; the original where none was found.
        found: (N,) bool, whether any iterate kept the label.
        score: (N,) dissimilarity of the returned iterate (attack-specific; larger is more moved).
        best_step: (N,) 1-based step of the returned iterate, 0 where none was found.
        label_preserving_steps: (N,) iterates that kept the label.
        zero_gradient_steps: (N,) steps whose attack gradient was None, all zero or not finite.
        steps: iterations run.
    """

    name: str
    perturbed: torch.Tensor
    found: torch.Tensor
    score: torch.Tensor
    best_step: torch.Tensor
    label_preserving_steps: torch.Tensor
    zero_gradient_steps: torch.Tensor
    steps: int


class ExplanationAttack(ABC):
    """An attack: a loss on the surrogate's map to maximise and a dissimilarity for selection."""

    name: str = ""
    uses_gradient: bool = True

    def __init__(self, problem: AttackProblem) -> None:
        self.problem = problem

    def start(self) -> torch.Tensor:
        """Return the first iterate; the original inputs unless the attack needs a nudge."""
        return self.problem.inputs.clone()

    @abstractmethod
    def loss(self, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Per-image loss (N,) to maximise, from the surrogate maps (N, H, W) of ``x``."""

    @abstractmethod
    def dissimilarity(self, maps: torch.Tensor) -> torch.Tensor:
        """Per-image dissimilarity (N,) of original-model maps from the originals; larger wins."""

    def direction(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (sign of the loss gradient (N, C, H, W), (N,) bool: gradient was unusable)."""
        leaf = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            total = self.loss(leaf, self.problem.surrogate_maps(leaf)).sum()
            (gradient,) = torch.autograd.grad(total, leaf, allow_unused=True)
        if gradient is None:
            return torch.zeros_like(x), torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        finite = torch.isfinite(gradient)
        gradient = torch.where(finite, gradient, torch.zeros_like(gradient))
        unusable = gradient.flatten(1).abs().amax(1) == 0
        return gradient.sign(), unusable


def run_attack(attack: ExplanationAttack, context: JobContext | None = None) -> AttackOutcome:
    """Run ``attack`` for ``problem.steps`` iterations and select the best label-preserving iterate.

    Progress is reported after every step and cancellation checked before it.
    """
    problem = attack.problem
    context = context or JobContext()
    batch = problem.inputs.shape[0]
    device = problem.inputs.device
    best = problem.inputs.clone()
    best_score = torch.full((batch,), float("-inf"), device=device)
    best_step = torch.zeros(batch, dtype=torch.long, device=device)
    preserving_steps = torch.zeros(batch, dtype=torch.long, device=device)
    zero_gradient_steps = torch.zeros(batch, dtype=torch.long, device=device)

    x = problem.project(attack.start())
    for step in range(1, problem.steps + 1):
        context.check_cancelled()
        direction, unusable = attack.direction(x)
        zero_gradient_steps += unusable.long()
        x = problem.project(x + problem.step_size * direction)

        logits, maps = problem.evaluate(x)
        preserved = logits.argmax(1) == problem.target
        score = attack.dissimilarity(maps)
        better = preserved & (score > best_score)
        best[better] = x[better]
        best_score[better] = score[better]
        best_step[better] = step
        preserving_steps += preserved.long()
        context.progress(step / problem.steps, f"{attack.name} step {step}/{problem.steps}")

    found = best_step > 0
    logger.info(
        "attack %s: %d steps, %d/%d images with a label-preserving iterate",
        attack.name,
        problem.steps,
        int(found.sum()),
        batch,
    )
    return AttackOutcome(
        name=attack.name,
        perturbed=best,
        found=found,
        score=torch.where(found, best_score, torch.zeros_like(best_score)),
        best_step=best_step,
        label_preserving_steps=preserving_steps,
        zero_gradient_steps=zero_gradient_steps,
        steps=problem.steps,
    )
