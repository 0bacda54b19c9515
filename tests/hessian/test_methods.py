"""Every Hessian method agrees with each problem's closed form at small sizes."""

from __future__ import annotations

import pytest
import torch

from worker.hessian.methods import make_hessian_call, to_torch
from worker.hessian.params import HessianBenchmarkParams
from worker.hessian.problems import build_problem

PROBLEMS = ["quadratic", "logistic_regression", "matrix_factorization"]
TORCH_METHODS = ["torch_func", "autograd_rowwise", "autograd_vectorized"]
CPU = torch.device("cpu")


def relative_error(hessian: torch.Tensor, reference: torch.Tensor) -> float:
    """Return max |hessian - reference| / max |reference|."""
    return ((hessian - reference).abs().max() / reference.abs().max()).item()


def hessian_of(method: str, problem) -> torch.Tensor:
    return to_torch(make_hessian_call(method, problem)(), problem.x)


@pytest.mark.parametrize("method", TORCH_METHODS)
@pytest.mark.parametrize("problem_name", PROBLEMS)
@pytest.mark.parametrize("size", [1, 4, 7])
def test_method_matches_closed_form_float64(problem_name: str, method: str, size: int) -> None:
    params = HessianBenchmarkParams(l2_penalty=0.3, factorization_rank=3, seed=size)
    problem = build_problem(problem_name, size, params, torch.float64, CPU)
    reference = hessian_of("closed_form", problem)
    hessian = hessian_of(method, problem)
    side = problem.hessian_dim
    assert hessian.shape == (side, side)
    assert hessian.dtype == torch.float64
    assert relative_error(hessian, reference) < 1e-12


@pytest.mark.parametrize("method", TORCH_METHODS)
@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_method_matches_closed_form_float32(problem_name: str, method: str) -> None:
    params = HessianBenchmarkParams(factorization_rank=3)
    problem = build_problem(problem_name, 6, params, torch.float32, CPU)
    reference = hessian_of("closed_form", problem)
    hessian = hessian_of(method, problem)
    assert hessian.dtype == torch.float32
    assert relative_error(hessian, reference) < 1e-5


@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_closed_form_matches_finite_differences(problem_name: str) -> None:
    # Central differences of the autograd gradient check the closed form independently of the
    # second-derivative code paths of the methods under test.
    params = HessianBenchmarkParams(l2_penalty=0.3, factorization_rank=2)
    problem = build_problem(problem_name, 3, params, torch.float64, CPU)
    reference = problem.closed_form(problem.x)

    def gradient(point: torch.Tensor) -> torch.Tensor:
        point = point.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(problem.value(point), point)
        return grad

    step = 1e-5
    columns = []
    for index in range(problem.hessian_dim):
        offset = torch.zeros_like(problem.x)
        offset[index] = step
        columns.append((gradient(problem.x + offset) - gradient(problem.x - offset)) / (2 * step))
    estimate = torch.stack(columns, dim=1)
    assert relative_error(estimate, reference) < 1e-7


def test_logistic_penalty_adds_identity() -> None:
    plain = HessianBenchmarkParams(l2_penalty=0.0)
    penalised = HessianBenchmarkParams(l2_penalty=0.5)
    without = build_problem("logistic_regression", 5, plain, torch.float64, CPU)
    with_penalty = build_problem("logistic_regression", 5, penalised, torch.float64, CPU)
    difference = with_penalty.closed_form(with_penalty.x) - without.closed_form(without.x)
    torch.testing.assert_close(difference, 0.5 * torch.eye(5, dtype=torch.float64))


def test_factorization_layout_row_major() -> None:
    # Row-major vec(U): entry U[i, k] is x[i * r + k], and H = 2 (I_m kron V^T V).
    rows, rank = 4, 3
    params = HessianBenchmarkParams(factorization_rank=rank)
    problem = build_problem("matrix_factorization", rows, params, torch.float64, CPU)
    v = problem.tensors["v"]
    hessian = hessian_of("torch_func", problem)
    block = 2 * v.T @ v
    for i in range(rows):
        for j in range(rows):
            expected = block if i == j else torch.zeros_like(block)
            actual = hessian[i * rank : (i + 1) * rank, j * rank : (j + 1) * rank]
            torch.testing.assert_close(actual, expected)


def test_same_seed_same_data() -> None:
    params = HessianBenchmarkParams(seed=7)
    first = build_problem("quadratic", 5, params, torch.float64, CPU)
    second = build_problem("quadratic", 5, params, torch.float64, CPU)
    other = build_problem("quadratic", 5, HessianBenchmarkParams(seed=8), torch.float64, CPU)
    assert torch.equal(first.tensors["a"], second.tensors["a"])
    assert not torch.equal(first.tensors["a"], other.tensors["a"])


def test_unknown_method_rejected() -> None:
    problem = build_problem("quadratic", 2, HessianBenchmarkParams(), torch.float64, CPU)
    with pytest.raises(ValueError, match=r"method must be one of closed_form, .*got 'newton'"):
        make_hessian_call("newton", problem)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("problem_name", PROBLEMS)
def test_jax_matches_closed_form(problem_name: str, dtype: torch.dtype) -> None:
    pytest.importorskip("jax", reason="JAX is optional: pip install 'fragility-audit[jax]'")
    params = HessianBenchmarkParams(l2_penalty=0.3, factorization_rank=3)
    problem = build_problem(problem_name, 5, params, dtype, CPU)
    reference = hessian_of("closed_form", problem)
    hessian = hessian_of("jax", problem)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert relative_error(hessian, reference) < tolerance
