"""Label-preserving attacks on saliency maps, one module per attack.

Every attack runs the same projected sign-gradient loop (``base.run_attack``): bounded in
L-infinity by epsilon around the original, clipped to [0, 1], every iterate checked on the
original model, and the returned iterate the most dissimilar label-preserving one.
"""

from worker.audit.attacks.base import AttackOutcome, AttackProblem, ExplanationAttack, run_attack
from worker.audit.attacks.registry import build_attack

__all__ = ["AttackOutcome", "AttackProblem", "ExplanationAttack", "build_attack", "run_attack"]
