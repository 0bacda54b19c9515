"""The Hessian methods under test, each turned into a zero-argument callable for timing.

- closed_form: the problem's tensor-calculus expression (for example A + A^T).
- torch_func: ``torch.func.hessian``, forward-over-reverse (jacfwd of jacrev) with vmap.
- autograd_rowwise: ``torch.autograd.functional.hessian(vectorize=False)``, one backward pass
  per Hessian row in a Python loop.
- autograd_vectorized: the same with ``vectorize=True``, reverse-over-reverse with the rows
  batched by vmap.
- jax: ``jax.jit(jax.hessian(f))``, forward-over-reverse, compiled during the warm-up calls.
  JAX is optional (``pip install 'fragility-audit[jax]'``); without it the method is skipped.

The torch methods run eagerly, as a user calling them would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from worker.hessian.problems import HessianProblem

logger = logging.getLogger(__name__)

METHOD_LABELS: dict[str, str] = {
    "closed_form": "closed form",
    "torch_func": "torch.func.hessian",
    "autograd_rowwise": "torch.autograd.functional.hessian (vectorize=False)",
    "autograd_vectorized": "torch.autograd.functional.hessian (vectorize=True)",
    "jax": "jax.hessian (jit)",
}

JAX_MISSING_REASON = "skipped: JAX not installed (pip install 'fragility-audit[jax]')"

HessianCall = Callable[[], torch.Tensor]


def jax_unavailable_reason(device: torch.device) -> str | None:
    """Return why the jax method cannot run on ``device``, or None when it can."""
    try:
        import jax
    except ImportError:
        return JAX_MISSING_REASON
    platform = "gpu" if device.type == "cuda" else "cpu"
    try:
        jax.devices(platform)
    except RuntimeError as error:
        return f"skipped: JAX {jax.__version__} has no {platform} backend ({error})"
    return None


def make_hessian_call(method: str, problem: HessianProblem) -> HessianCall:
    """Return a callable that computes the Hessian of ``problem`` at ``problem.x`` with ``method``.

    The callable returns a (hessian_dim, hessian_dim) torch tensor. For jax the conversion of
    the output to torch happens outside the callable (see ``to_torch``), so it is not timed.

    Raises:
        ValueError: when ``method`` is unknown.
    """
    x = problem.x
    if method == "closed_form":
        return lambda: problem.closed_form(x)
    if method == "torch_func":
        hessian = torch.func.hessian(problem.value)
        return lambda: hessian(x)
    if method == "autograd_rowwise":
        return lambda: torch.autograd.functional.hessian(problem.value, x, vectorize=False)
    if method == "autograd_vectorized":
        return lambda: torch.autograd.functional.hessian(problem.value, x, vectorize=True)
    if method == "jax":
        return make_jax_call(problem)
    raise ValueError(f"method must be one of {', '.join(METHOD_LABELS)}, got {method!r}")


def make_jax_call(problem: HessianProblem) -> Callable[[], Any]:
    """Return a callable that computes the Hessian with ``jax.jit(jax.hessian(f))``.

    The callable blocks until the result is ready, because JAX dispatches asynchronously. For
    float64 this enables JAX's process-wide ``jax_enable_x64`` flag, which stays on afterwards.
    """
    import jax
    import jax.numpy as jnp

    if problem.x.dtype == torch.float64:
        jax.config.update("jax_enable_x64", True)
    platform = "gpu" if problem.x.device.type == "cuda" else "cpu"
    jax_device = jax.devices(platform)[0]

    def to_jax(tensor: torch.Tensor) -> Any:
        return jax.device_put(tensor.detach().cpu().numpy(), jax_device)

    arrays = {name: to_jax(tensor) for name, tensor in problem.tensors.items()}
    x = to_jax(problem.x)
    hessian = jax.jit(jax.hessian(problem.jax_value(jnp, arrays)))
    return lambda: hessian(x).block_until_ready()


def to_torch(output: Any, like: torch.Tensor) -> torch.Tensor:
    """Return a method's output as a 2-D torch tensor on the device and dtype of ``like``."""
    if not isinstance(output, torch.Tensor):
        output = torch.from_numpy(np.array(output))  # a writable copy
    side = like.numel()
    return output.reshape(side, side).to(device=like.device, dtype=like.dtype)
