"""Quadratic form f(x) = x^T A x with closed-form Hessian A + A^T.

Variable: x, shape (n,), where n is the size. Data: A, shape (n, n), standard normal and not
symmetric, so the closed form has to add the transpose. The Hessian does not depend on x and has
shape (n, n). Values are unitless.
"""

from __future__ import annotations

from typing import Any

import torch

from worker.hessian.problems import HessianProblem, random_normal


def value(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return x^T A x as a 0-d tensor; a is (n, n) and x is (n,)."""
    return x @ (a @ x)


def closed_form(a: torch.Tensor) -> torch.Tensor:
    """Return the Hessian A + A^T, shape (n, n)."""
    return a + a.T


def jax_value(jnp: Any, arrays: dict[str, Any]) -> Any:
    """Return x -> x^T A x in JAX, with A taken from ``arrays``."""
    a = arrays["a"]

    def function(x: Any) -> Any:
        return jnp.dot(x, jnp.dot(a, x))

    return function


def build(
    size: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> HessianProblem:
    """Draw A (size x size) and x (size,) from ``generator`` and return the problem."""
    a = random_normal((size, size), generator).to(device=device, dtype=dtype)
    x = random_normal((size,), generator).to(device=device, dtype=dtype)
    return HessianProblem(
        name="quadratic",
        size=size,
        x=x,
        tensors={"a": a},
        value=lambda point: value(a, point),
        closed_form=lambda point: closed_form(a),
        jax_value=jax_value,
    )
