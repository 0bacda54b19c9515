"""Build an attack by name."""

from __future__ import annotations

from worker.audit.attacks.base import AttackProblem, ExplanationAttack
from worker.audit.attacks.center_of_mass import CenterOfMassAttack
from worker.audit.attacks.manipulate import ManipulateAttack
from worker.audit.attacks.random_sign import RandomSignAttack
from worker.audit.attacks.targeted import TargetedAttack
from worker.audit.attacks.topk import TopKAttack


def build_attack(name: str, problem: AttackProblem, gamma: float = 1.0) -> ExplanationAttack:
    """Return the attack called ``name`` on ``problem``.

    "random" selects its iterate by top-k intersection, like the top-k attack.

    Raises:
        ValueError: unknown name (the known ones are listed) or missing target for targeted
            and manipulate attacks.
    """
    if name == "topk":
        return TopKAttack(problem)
    if name == "center_of_mass":
        return CenterOfMassAttack(problem)
    if name == "targeted":
        return TargetedAttack(problem)
    if name == "manipulate":
        return ManipulateAttack(problem, gamma)
    if name == "random":
        return RandomSignAttack(TopKAttack(problem))
    raise ValueError(
        "attack must be 'topk', 'center_of_mass', 'targeted', 'manipulate' or 'random', "
        f"got {name!r}"
    )
