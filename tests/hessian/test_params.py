"""Validation of HessianBenchmarkParams: every bad value is rejected before any work starts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from worker.hessian.params import (
    DEFAULT_MEMORY_LIMIT_BYTES,
    DEFAULT_SIZES,
    HessianBenchmarkParams,
    estimate_peak_bytes,
)


def error_text(**fields: object) -> str:
    """Validate ``fields`` and return the text of the ValidationError it must raise."""
    with pytest.raises(ValidationError) as caught:
        HessianBenchmarkParams(**fields)
    return str(caught.value)


def test_defaults_valid() -> None:
    params = HessianBenchmarkParams()
    assert params.problems == ["quadratic", "logistic_regression", "matrix_factorization"]
    assert params.methods[0] == "closed_form"
    assert "jax" in params.methods
    assert params.dtype == "float64"
    assert params.memory_limit_bytes == DEFAULT_MEMORY_LIMIT_BYTES
    for problem, sizes in DEFAULT_SIZES.items():
        assert params.sizes_for(problem) == sizes
    assert params.resolved_error_tolerance == 1e-6


def test_float32_tolerance_default() -> None:
    assert HessianBenchmarkParams(dtype="float32").resolved_error_tolerance == 1e-3


def test_one_size_list_for_all() -> None:
    params = HessianBenchmarkParams(sizes=[30, 10, 10])
    assert params.sizes_for("quadratic") == [10, 30]
    assert params.sizes_for("matrix_factorization") == [10, 30]


def test_sizes_per_problem() -> None:
    params = HessianBenchmarkParams(sizes={"quadratic": [5]})
    assert params.sizes_for("quadratic") == [5]
    assert params.sizes_for("logistic_regression") == DEFAULT_SIZES["logistic_regression"]


def test_closed_form_always_added() -> None:
    params = HessianBenchmarkParams(methods=["torch_func", "torch_func"])
    assert params.methods == ["closed_form", "torch_func"]


def test_negative_size_rejected() -> None:
    text = error_text(sizes=[10, -5])
    assert "sizes[1] must be a positive integer" in text
    assert "-5" in text


def test_negative_size_in_dict_rejected() -> None:
    text = error_text(sizes={"quadratic": [0]})
    assert "sizes.quadratic[0] must be a positive integer" in text


def test_non_integer_size_rejected() -> None:
    text = error_text(sizes=[10.5])
    assert "sizes[0] must be a positive integer, got 10.5" in text


def test_sizes_wrong_type_rejected() -> None:
    text = error_text(sizes="100")
    assert "sizes must be a list of positive integers" in text
    assert "'100'" in text


def test_unknown_problem_rejected() -> None:
    text = error_text(problems=["quadratic", "rosenbrock"])
    assert "problems.1" in text
    assert "'logistic_regression'" in text
    assert "rosenbrock" in text


def test_unknown_problem_in_sizes_rejected() -> None:
    text = error_text(sizes={"rosenbrock": [10]})
    assert "sizes has an unknown problem 'rosenbrock'" in text
    assert "matrix_factorization" in text


def test_sizes_for_unselected_problem_rejected() -> None:
    text = error_text(problems=["quadratic"], sizes={"logistic_regression": [10]})
    assert "sizes names problems that are not in problems (logistic_regression)" in text


def test_unknown_method_rejected() -> None:
    text = error_text(methods=["torch_func", "finite_differences"])
    assert "methods.1" in text
    assert "'autograd_vectorized'" in text
    assert "finite_differences" in text


def test_unknown_field_rejected() -> None:
    text = error_text(size=[10])
    assert "size" in text
    assert "Extra inputs are not permitted" in text


@pytest.mark.parametrize(
    ("field", "value"),
    [("repeats", 0), ("warmup", -1), ("seed", -1), ("memory_limit_bytes", 0), ("dtype", "f16")],
)
def test_out_of_range_rejected(field: str, value: object) -> None:
    text = error_text(**{field: value})
    assert field in text


def test_max_repeats_below_repeats_rejected() -> None:
    text = error_text(repeats=10, max_repeats=5)
    assert "max_repeats must be >= repeats (10), got 5" in text


def test_memory_limit_rejects_large_sizes() -> None:
    text = error_text(problems=["matrix_factorization"], sizes=[1000])
    assert "matrix_factorization at size 1000" in text
    assert "memory_limit_bytes 2147483648" in text
    assert "GiB" in text
    assert "methods over the limit: closed_form" in text


def test_memory_limit_is_configurable() -> None:
    params = HessianBenchmarkParams(
        problems=["quadratic"], sizes=[4000], memory_limit_bytes=64 * 1024**3
    )
    assert params.sizes_for("quadratic") == [4000]
    text = error_text(problems=["quadratic"], sizes=[100], memory_limit_bytes=1000)
    assert "quadratic at size 100" in text


def test_memory_check_uses_chosen_methods() -> None:
    # The closed form keeps no per-row copies, so it fits where the autodiff methods do not.
    size = 300
    closed = estimate_peak_bytes(
        "matrix_factorization",
        size,
        "closed_form",
        dtype="float64",
        samples_per_feature=2,
        factorization_rank=10,
    )
    autodiff = estimate_peak_bytes(
        "matrix_factorization",
        size,
        "torch_func",
        dtype="float64",
        samples_per_feature=2,
        factorization_rank=10,
    )
    assert closed < DEFAULT_MEMORY_LIMIT_BYTES < autodiff
    params = HessianBenchmarkParams(
        problems=["matrix_factorization"], sizes=[size], methods=["closed_form"]
    )
    assert params.methods == ["closed_form"]


def test_estimate_grows_with_size() -> None:
    for problem in DEFAULT_SIZES:
        small, large = (
            estimate_peak_bytes(
                problem,
                size,
                "torch_func",
                dtype="float64",
                samples_per_feature=2,
                factorization_rank=10,
            )
            for size in (10, 20)
        )
        assert small < large


def test_params_module_imports_no_torch() -> None:
    code = (
        "import sys; import worker.hessian.params, worker.jobs; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    completed = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert completed.returncode == 0
