"""Benchmark problems: each a scalar function of one vector with its closed-form Hessian.

Every problem flattens its variable to a 1-D tensor ``x`` of length ``hessian_dim``, so each
method returns a ``(hessian_dim, hessian_dim)`` Hessian and all methods compare entry by entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from worker.hessian.params import PROBLEMS, HessianBenchmarkParams


@dataclass(frozen=True)
class HessianProblem:
    """One problem instance at one size, with its data on the target device and dtype.

    Attributes:
        name: problem name, one of ``worker.hessian.params.PROBLEMS``.
        size: the size parameter (n, d or m; see ``worker.hessian.params``).
        x: the point where the Hessian is evaluated, shape (hessian_dim,).
        tensors: the fixed data of the function (for example A, or X and y), by name.
        value: the function, mapping x of shape (hessian_dim,) to a 0-d tensor.
        closed_form: the Hessian at x from its closed-form expression, shape
            (hessian_dim, hessian_dim).
        jax_value: builds the same function in JAX from ``(jnp, arrays)``, where ``arrays``
            contains ``tensors`` as JAX arrays. It takes the jax.numpy module as an argument, so
            the problem modules never import JAX.
    """

    name: str
    size: int
    x: torch.Tensor
    tensors: dict[str, torch.Tensor]
    value: Callable[[torch.Tensor], torch.Tensor]
    closed_form: Callable[[torch.Tensor], torch.Tensor]
    jax_value: Callable[[Any, dict[str, Any]], Callable[[Any], Any]]

    @property
    def hessian_dim(self) -> int:
        """Side of the Hessian, the length of x."""
        return self.x.numel()


def random_normal(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Draw standard-normal float64 values on the CPU.

    Drawing in float64 on the CPU and casting afterwards gives the same data, up to rounding, for
    every dtype and device.
    """
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def build_problem(
    name: str,
    size: int,
    params: HessianBenchmarkParams,
    dtype: torch.dtype,
    device: torch.device,
) -> HessianProblem:
    """Build problem ``name`` at ``size`` with data drawn from ``params.seed``.

    The generator is seeded per problem and size, so a cell's data does not depend on which other
    cells run.
    """
    from worker.hessian.problems import logistic_regression, matrix_factorization, quadratic

    generator = torch.Generator().manual_seed(params.seed)
    if name == "quadratic":
        return quadratic.build(size, generator, dtype, device)
    if name == "logistic_regression":
        return logistic_regression.build(
            size,
            generator,
            dtype,
            device,
            samples_per_feature=params.samples_per_feature,
            l2_penalty=params.l2_penalty,
        )
    if name == "matrix_factorization":
        return matrix_factorization.build(
            size, generator, dtype, device, rank=params.factorization_rank
        )
    raise ValueError(f"problem must be one of {', '.join(PROBLEMS)}, got {name!r}")
