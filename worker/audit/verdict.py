"""The audit's verdict: fragile, robust or inconclusive, with the reason."""

from __future__ import annotations

from dataclasses import dataclass

MIN_USABLE_GRADIENT_FRACTION = 0.5
"""A robust verdict needs a usable attack gradient on at least this share of the steps."""


@dataclass
class Verdict:
    """A verdict and the sentence that explains it."""

    verdict: str
    reason: str


def decide_verdict(
    *,
    original_map_is_zero: bool,
    attack_name: str,
    attack_found: bool,
    attack_topk: float,
    attack_gradient_steps: int,
    attack_uses_gradient: bool,
    baseline_found: bool,
    baseline_topk: float,
    steps: int,
    threshold: float,
    epsilon: float = 1.0,
    step_size: float = 1.0,
) -> Verdict:
    """Decide the verdict from the attack and the random baseline.

    Rules, in order:

    1. An all-zero original map has no ranking to move: inconclusive.
    2. Fragile when the attack or the baseline found a label-preserving perturbation whose
       top-k intersection is below ``threshold``: the map demonstrably moved.
    3. Inconclusive when the attack could not search: no label-preserving iterate, or a
       gradient that was unusable (None, zero or not finite) at more than half of the steps.
       A map is never called robust because its attack gradient vanished.
    4. Inconclusive when only the random attack ran, which cannot show robustness.
    5. Inconclusive when steps x step_size < epsilon: the search could not reach the edge of
       the budget, so a map that held proves little.
    6. Otherwise robust: the search ran and the map kept at least ``threshold`` of its top k.

    Args:
        attack_gradient_steps: steps whose attack gradient was usable.
        threshold: top-k intersection below which the map is fragile.
        epsilon, step_size: the budget and the step, in pixel units; defaults that never
            trigger rule 5.
    """
    if original_map_is_zero:
        return Verdict(
            "inconclusive",
            "the saliency map of the input is zero everywhere, so there is no ranking to move; "
            "check the method (gradient x input is zero on black pixels) and the model",
        )
    candidates = []
    if attack_found:
        candidates.append((attack_topk, f"the {attack_name} attack"))
    if baseline_found:
        candidates.append((baseline_topk, "the random-sign baseline"))
    if candidates:
        worst_topk, source = min(candidates)
        if worst_topk < threshold:
            return Verdict(
                "fragile",
                f"{source} found a label-preserving perturbation that keeps only "
                f"{worst_topk:.2f} of the top-k pixels (threshold {threshold:.2f})",
            )
    if not attack_found:
        return Verdict(
            "inconclusive",
            f"no iterate of the {attack_name} attack kept the predicted label, so nothing was "
            "measured; the input may lie near a decision boundary: try a smaller epsilon",
        )
    if not attack_uses_gradient:
        return Verdict(
            "inconclusive",
            "only random-sign perturbations were tried, and maps that survive random noise can "
            "still move under a gradient attack; run the topk or center_of_mass attack",
        )
    if attack_gradient_steps < MIN_USABLE_GRADIENT_FRACTION * steps:
        return Verdict(
            "inconclusive",
            f"the {attack_name} attack's gradient was None, zero or not finite at "
            f"{steps - attack_gradient_steps} of {steps} steps, so the search barely moved; "
            "this happens when activations cannot be smoothed (for example inside TorchScript "
            "models)",
        )
    reach = steps * step_size
    if reach < epsilon:
        return Verdict(
            "inconclusive",
            f"{steps} steps of {step_size * 255:.2f}/255 move a pixel at most "
            f"{reach * 255:.1f}/255, less than epsilon {epsilon * 255:.1f}/255, so the search "
            "could not use the whole budget; raise the steps or the step size",
        )
    return Verdict(
        "robust",
        f"after {steps} steps the most damaging label-preserving perturbation kept "
        f"{min(c[0] for c in candidates):.2f} of the top-k pixels (threshold {threshold:.2f})",
    )
