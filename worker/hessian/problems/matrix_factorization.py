"""Matrix factorisation f(U) = ||U V^T - M||_F^2 with a Kronecker-structured Hessian in U.

Variable: U, shape (m, r), where m is the size and r the rank, passed flattened as the row-major
vec(U) of shape (m r,), so entry U[i, k] sits at index i * r + k (torch's ``reshape`` order).
Data: V, shape (m, r), and the square target M, shape (m, m), all standard normal; V and M are
constants. Values are unitless.

The gradient is 2 (U V^T - M) V, so d^2 f / dU[i, k] dU[j, l] = 2 delta_ij (V^T V)[k, l]. In the
row-major layout that is the block-diagonal matrix

    H = 2 (I_m kron V^T V),   shape (m r, m r),

with m diagonal blocks 2 V^T V of shape (r, r). It does not depend on U. (With the column-major
vec of the matrix-calculus literature the same Hessian reads 2 (V^T V kron I_m).)
"""

from __future__ import annotations

from typing import Any

import torch

from worker.hessian.problems import HessianProblem, random_normal


def value(v: torch.Tensor, target: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Return ||U V^T - M||_F^2 as a 0-d tensor, with u the row-major vec(U) of shape (m r,)."""
    rows, rank = v.shape
    residual = u.reshape(rows, rank) @ v.T - target
    return torch.sum(residual * residual)


def closed_form(v: torch.Tensor) -> torch.Tensor:
    """Return 2 (I_m kron V^T V), shape (m r, m r)."""
    rows = v.shape[0]
    identity = torch.eye(rows, dtype=v.dtype, device=v.device)
    return 2 * torch.kron(identity, v.T @ v)


def jax_value(jnp: Any, arrays: dict[str, Any]) -> Any:
    """Return vec(U) -> ||U V^T - M||_F^2 in JAX, with V and M taken from ``arrays``."""
    v = arrays["v"]
    target = arrays["target"]
    rows, rank = v.shape

    def function(u: Any) -> Any:
        # jnp.reshape is row-major by default, the same layout as torch.reshape.
        residual = jnp.dot(jnp.reshape(u, (rows, rank)), v.T) - target
        return jnp.sum(residual * residual)

    return function


def build(
    size: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    *,
    rank: int,
) -> HessianProblem:
    """Draw U (size x rank), V (size x rank) and M (size x size) and return the problem."""
    u = random_normal((size, rank), generator)
    v = random_normal((size, rank), generator)
    target = random_normal((size, size), generator)

    u = u.reshape(-1).to(device=device, dtype=dtype)
    v = v.to(device=device, dtype=dtype)
    target = target.to(device=device, dtype=dtype)
    return HessianProblem(
        name="matrix_factorization",
        size=size,
        x=u,
        tensors={"v": v, "target": target},
        value=lambda point: value(v, target, point),
        closed_form=lambda point: closed_form(v),
        jax_value=jax_value,
    )
