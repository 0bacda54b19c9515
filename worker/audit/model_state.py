"""Leave the caller's model as it was found: training flag and parameters' requires_grad."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen_for_audit(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters, and restore both on exit.

    Freezing the parameters keeps weight gradients out of the attack's autograd graph. The
    original flags are restored in ``finally``, so an error or a cancellation leaves the caller's
    model as found.
    """
    was_training = model.training
    requires_grad = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    try:
        model.eval()
        for parameter, _ in requires_grad:
            parameter.requires_grad_(False)
        yield model
    finally:
        for parameter, flag in requires_grad:
            parameter.requires_grad_(flag)
        model.train(was_training)
