"""Parameters of the Hessian benchmark and the memory estimate checked before any work starts.

This module imports no torch, so the API can validate requests and publish the JSON schema.

Size conventions (the Hessian is square with side ``hessian_dim``):

- quadratic: size n is the length of x; the Hessian is n x n.
- logistic_regression: size d is the number of features (length of w); X has
  ``samples_per_feature * d`` rows; the Hessian is d x d.
- matrix_factorization: size m is the number of rows of U (m x r) and of the square target M
  (m x m), with r = ``factorization_rank``; the Hessian with respect to vec(U) is (m r) x (m r).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Problem = Literal["quadratic", "logistic_regression", "matrix_factorization"]
Method = Literal["closed_form", "torch_func", "autograd_rowwise", "autograd_vectorized", "jax"]

PROBLEMS: tuple[str, ...] = Problem.__args__
METHODS: tuple[str, ...] = Method.__args__

# Methods whose peak memory grows with one copy of the function's largest intermediate per
# Hessian row. The vmap methods (torch_func, autograd_vectorized, jax) hold those copies at once.
# autograd_rowwise frees each copy, but glibc may keep the freed blocks resident: in one run of
# matrix factorisation at m=200 its peak was 644 MiB, and 64 MiB with MALLOC_MMAP_THRESHOLD_=65536.
# The limit has to cover resident memory, so it is counted the same way.
PER_ROW_METHODS: frozenset[str] = frozenset(
    {"torch_func", "autograd_rowwise", "autograd_vectorized", "jax"}
)

# Defaults give Hessian sides 10, 30, 100, 300 and 1000 for every problem (with rank 10 for
# matrix factorisation), so the panels of the plot share one scale.
DEFAULT_SIZES: dict[str, list[int]] = {
    "quadratic": [10, 30, 100, 300, 1000],
    "logistic_regression": [10, 30, 100, 300, 1000],
    "matrix_factorization": [1, 3, 10, 30, 100],
}

DEFAULT_MEMORY_LIMIT_BYTES = 2 * 1024**3

# Multiplier on the bytes counted in estimate_peak_bytes, for temporaries and the values autograd
# saves for the backward pass. The largest measured ratio of peak resident memory to the count was
# 4.3 (torch_func, logistic_regression, d=1000), on CPU with torch 2.14.1, by
# bench/hessian_memory.py.
# NOTE: calibrated on CPU only; CUDA's caching allocator and JAX may need a larger factor.
MEMORY_FACTOR = 5

ITEMSIZE = {"float64": 8, "float32": 4}


def hessian_dim(problem: str, size: int, factorization_rank: int) -> int:
    """Return the side of the Hessian of ``problem`` at ``size``."""
    if problem == "matrix_factorization":
        return size * factorization_rank
    return size


def estimate_peak_bytes(
    problem: str,
    size: int,
    method: str,
    *,
    dtype: str,
    samples_per_feature: int,
    factorization_rank: int,
) -> int:
    """Estimate the peak memory in bytes of computing one Hessian (an estimate, not a bound).

    The count is the data, the Hessian and, for the automatic-differentiation methods, one copy
    of the largest intermediate per Hessian row, multiplied by MEMORY_FACTOR.
    """
    side = hessian_dim(problem, size, factorization_rank)
    if problem == "quadratic":
        data = size * size  # A
        intermediate = size  # A x
    elif problem == "logistic_regression":
        samples = samples_per_feature * size
        data = samples * size  # X
        intermediate = samples  # X w
    elif problem == "matrix_factorization":
        data = 2 * size * factorization_rank + size * size  # U, V, M
        intermediate = size * size  # U V^T - M
    else:
        raise ValueError(f"problem must be one of {', '.join(PROBLEMS)}, got {problem!r}")
    elements = data + side * side
    if method in PER_ROW_METHODS:
        elements += side * intermediate
    return ITEMSIZE[dtype] * MEMORY_FACTOR * elements


def format_bytes(count: int) -> str:
    """Format a byte count in GiB or MiB with three significant digits."""
    if count >= 1024**3:
        return f"{count / 1024**3:.3g} GiB"
    return f"{count / 1024**2:.3g} MiB"


def _parse_size_list(value: object, field: str) -> list[int]:
    """Return the sizes sorted and without duplicates, or raise ValueError naming ``field``."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"{field} must be a non-empty list of positive integers, got {value!r}")
    for index, size in enumerate(value):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{field}[{index}] must be a positive integer, got {size!r}")
    return sorted(set(value))


class HessianBenchmarkParams(BaseModel):
    """Parameters of one Hessian benchmark run.

    Every problem in ``problems`` is measured at each of its sizes with every method in
    ``methods``. The closed form is always measured because every ratio and error refers to it.
    """

    model_config = ConfigDict(extra="forbid")

    problems: list[Problem] = Field(
        default_factory=lambda: list(PROBLEMS),
        min_length=1,
        description="Problems to measure: quadratic, logistic_regression, matrix_factorization. "
        "Default: all three.",
    )
    methods: list[Method] = Field(
        default_factory=lambda: list(METHODS),
        min_length=1,
        description="Methods to measure: closed_form, torch_func (torch.func.hessian), "
        "autograd_rowwise (torch.autograd.functional.hessian, vectorize=False), "
        "autograd_vectorized (the same with vectorize=True), jax (jax.hessian, skipped when "
        "JAX is not installed). closed_form is added when missing. Default: all five.",
    )
    sizes: list[int] | dict[str, list[int]] | None = Field(
        None,
        description="Sizes to measure: one list for every problem, or an object mapping problem "
        "names to lists. Problems without a list use the defaults: 10, 30, 100, 300, 1000 for "
        "quadratic and logistic_regression; 1, 3, 10, 30, 100 rows of U for "
        "matrix_factorization.",
    )
    repeats: int = Field(
        5, ge=1, le=1000, description="Minimum number of timed calls per cell after the warm-up."
    )
    min_time_s: float = Field(
        0.2,
        ge=0,
        le=60,
        description="Timing of a cell goes on past repeats until its timed calls add up to this "
        "many seconds, at most max_repeats calls, so that calls of microseconds get enough "
        "samples for a steady median. 0 times exactly repeats calls.",
    )
    max_repeats: int = Field(
        1000, ge=1, le=100_000, description="Maximum number of timed calls per cell."
    )
    warmup: int = Field(
        1,
        ge=0,
        le=100,
        description="Untimed calls per cell before timing. With 0 the first timed call also "
        "pays one-time costs: torch.func.hessian imports torch._dynamo on its first call "
        "(seconds) and jax compiles.",
    )
    dtype: Literal["float64", "float32"] = Field("float64", description="Floating-point type.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where to run: 'auto' takes CUDA when it is available."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the random data.")
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="torch intra-op threads during the run (torch.set_num_threads), restored "
        "afterwards. Default: leave torch's setting, by default one thread per CPU core. JAX's "
        "threads are not affected.",
    )
    samples_per_feature: int = Field(
        2,
        ge=1,
        le=1000,
        description="logistic_regression: rows of X per feature, so X is (samples_per_feature*d) "
        "x d.",
    )
    l2_penalty: float = Field(
        0.0,
        ge=0,
        description="logistic_regression: weight lambda of the regulariser (lambda/2)||w||^2, "
        "which adds lambda I to the Hessian. Default 0 (none).",
    )
    factorization_rank: int = Field(
        10, ge=1, le=10_000, description="matrix_factorization: columns r of U and V."
    )
    rowwise_max_dim: int = Field(
        1000,
        ge=1,
        description="Largest Hessian side measured with autograd_rowwise, which runs one "
        "backward pass per Hessian row in Python. Larger cells are skipped and listed in the "
        "result. At side 1000 it took 0.15 to 3 s per Hessian on 2 CPU cores.",
    )
    memory_limit_bytes: int = Field(
        DEFAULT_MEMORY_LIMIT_BYTES,
        gt=0,
        description="Largest estimated peak memory of one cell in bytes. Parameters whose "
        "estimate exceeds it are rejected before any work starts. Default 2 GiB.",
    )
    error_tolerance: float | None = Field(
        None,
        gt=0,
        description="Relative error (max |H - H_closed| / max |H_closed|) above which a method is "
        "flagged. Default 1e-6 for float64 and 1e-3 for float32.",
    )

    @field_validator("problems", "methods")
    @classmethod
    def _drop_duplicates(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("methods")
    @classmethod
    def _add_closed_form(cls, value: list[str]) -> list[str]:
        if "closed_form" in value:
            return value
        return ["closed_form", *value]

    @field_validator("sizes", mode="before")
    @classmethod
    def _parse_sizes(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, list):
            return _parse_size_list(value, "sizes")
        if isinstance(value, dict):
            parsed: dict[str, list[int]] = {}
            for problem, sizes in value.items():
                if problem not in PROBLEMS:
                    raise ValueError(
                        f"sizes has an unknown problem {problem!r}; accepted problems: "
                        f"{', '.join(PROBLEMS)}"
                    )
                parsed[problem] = _parse_size_list(sizes, f"sizes.{problem}")
            return parsed
        raise ValueError(
            "sizes must be a list of positive integers or an object mapping problem names to "
            f"such lists, got {value!r}"
        )

    @model_validator(mode="after")
    def _check_repeats(self) -> HessianBenchmarkParams:
        if self.max_repeats < self.repeats:
            raise ValueError(
                f"max_repeats must be >= repeats ({self.repeats}), got {self.max_repeats}"
            )
        return self

    @model_validator(mode="after")
    def _check_sizes_and_memory(self) -> HessianBenchmarkParams:
        if isinstance(self.sizes, dict):
            unused = [problem for problem in self.sizes if problem not in self.problems]
            if unused:
                raise ValueError(
                    f"sizes names problems that are not in problems ({', '.join(unused)}); "
                    f"problems is {self.problems}"
                )
        for problem in self.problems:
            largest = max(self.sizes_for(problem))
            estimates = {
                method: self.estimate_peak_bytes(problem, largest, method)
                for method in self.methods
            }
            over = {
                method: count
                for method, count in estimates.items()
                if count > self.memory_limit_bytes
            }
            if not over:
                continue
            worst = max(over, key=over.__getitem__)
            if "closed_form" in over:
                hint = "give smaller sizes or raise memory_limit_bytes"
            else:
                hint = "give smaller sizes, remove these methods, or raise memory_limit_bytes"
            raise ValueError(
                f"sizes: {problem} at size {largest} needs an estimated "
                f"{format_bytes(over[worst])} ({self.dtype}, method {worst}), above "
                f"memory_limit_bytes {self.memory_limit_bytes} "
                f"({format_bytes(self.memory_limit_bytes)}); methods over the limit: "
                f"{', '.join(over)}; {hint}"
            )
        return self

    def sizes_for(self, problem: str) -> list[int]:
        """Return the sizes measured for ``problem``, in increasing order."""
        if isinstance(self.sizes, list):
            return self.sizes
        if isinstance(self.sizes, dict) and problem in self.sizes:
            return self.sizes[problem]
        return DEFAULT_SIZES[problem]

    def hessian_dim(self, problem: str, size: int) -> int:
        """Return the side of the Hessian of ``problem`` at ``size``."""
        return hessian_dim(problem, size, self.factorization_rank)

    def estimate_peak_bytes(self, problem: str, size: int, method: str) -> int:
        """Estimate the peak memory in bytes of one cell (see the module function)."""
        return estimate_peak_bytes(
            problem,
            size,
            method,
            dtype=self.dtype,
            samples_per_feature=self.samples_per_feature,
            factorization_rank=self.factorization_rank,
        )

    @property
    def resolved_error_tolerance(self) -> float:
        """Relative error above which a method is flagged: the given one, or by dtype."""
        if self.error_tolerance is not None:
            return self.error_tolerance
        return 1e-6 if self.dtype == "float64" else 1e-3

    def summary_fields(self) -> dict[str, Any]:
        """Return the parameters with the sizes resolved per problem, for result.json."""
        fields = self.model_dump()
        fields["sizes"] = {problem: self.sizes_for(problem) for problem in self.problems}
        fields["error_tolerance"] = self.resolved_error_tolerance
        return fields
