"""Logistic-regression loss over (X, y) with closed-form Hessian X^T diag(p(1-p)) X + lambda I.

Variable: the weights w, shape (d,), where d is the size. Data: X, shape (N, d) with
N = samples_per_feature * d, standard normal divided by sqrt(d) so that the logits X w are of
order 1 and p(1-p) stays away from 0; labels y, shape (N,), in {0, 1}. The loss is the sum (not
the mean) over samples of the negative log-likelihood in nats,

    f(w) = sum_i [log(1 + exp(x_i . w)) - y_i x_i . w] + (lambda / 2) ||w||^2,

and with p = sigmoid(X w) its Hessian is X^T diag(p(1-p)) X + lambda I, shape (d, d).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from worker.hessian.problems import HessianProblem, random_normal


def value(
    features: torch.Tensor, labels: torch.Tensor, l2_penalty: float, w: torch.Tensor
) -> torch.Tensor:
    """Return the summed logistic loss plus (l2_penalty / 2) ||w||^2 as a 0-d tensor."""
    logits = features @ w
    # softplus(z) = log(1 + exp(z)) without overflow for large z.
    loss = torch.sum(F.softplus(logits) - labels * logits)
    return loss + 0.5 * l2_penalty * torch.dot(w, w)


def closed_form(features: torch.Tensor, l2_penalty: float, w: torch.Tensor) -> torch.Tensor:
    """Return X^T diag(p(1-p)) X + lambda I at w, shape (d, d)."""
    p = torch.sigmoid(features @ w)
    weights = p * (1 - p)
    hessian = features.T @ (weights[:, None] * features)
    if l2_penalty:
        hessian = hessian + l2_penalty * torch.eye(
            w.numel(), dtype=hessian.dtype, device=hessian.device
        )
    return hessian


def make_jax_value(l2_penalty: float) -> Any:
    """Return a ``jax_value`` builder for the loss with regulariser weight ``l2_penalty``."""

    def jax_value(jnp: Any, arrays: dict[str, Any]) -> Any:
        features = arrays["features"]
        labels = arrays["labels"]

        def function(w: Any) -> Any:
            logits = jnp.dot(features, w)
            loss = jnp.sum(jnp.logaddexp(0.0, logits) - labels * logits)
            return loss + 0.5 * l2_penalty * jnp.dot(w, w)

        return function

    return jax_value


def build(
    size: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    *,
    samples_per_feature: int,
    l2_penalty: float,
) -> HessianProblem:
    """Draw X, y and w from ``generator`` and return the problem with d = ``size`` features."""
    samples = samples_per_feature * size
    features = random_normal((samples, size), generator) / math.sqrt(size)
    labels = (torch.rand((samples,), generator=generator, dtype=torch.float64) < 0.5).double()
    w = random_normal((size,), generator)

    features = features.to(device=device, dtype=dtype)
    labels = labels.to(device=device, dtype=dtype)
    w = w.to(device=device, dtype=dtype)
    return HessianProblem(
        name="logistic_regression",
        size=size,
        x=w,
        tensors={"features": features, "labels": labels},
        value=lambda point: value(features, labels, l2_penalty, point),
        closed_form=lambda point: closed_form(features, l2_penalty, point),
        jax_value=make_jax_value(l2_penalty),
    )
