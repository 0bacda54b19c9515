"""``fragility run hessian_benchmark`` end to end through the real command line."""

from __future__ import annotations

import json

# torch_func is left out: its first call imports torch._dynamo, which costs seconds per process.
TINY_PARAMS = {
    "problems": ["quadratic", "matrix_factorization"],
    "methods": ["autograd_rowwise", "autograd_vectorized", "jax"],
    "sizes": [2, 3],
    "factorization_rank": 2,
    "repeats": 1,
    "min_time_s": 0,
    "device": "cpu",
}


def test_run_writes_result(run_fragility, tmp_path) -> None:
    out_dir = tmp_path / "out"
    completed = run_fragility(
        "run", "hessian_benchmark", "--quiet", "--params", json.dumps(TINY_PARAMS), "--out", out_dir
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads((out_dir / "result.json").read_text(encoding="utf-8"))
    assert len(result["results"]) >= 2 * 2 * 3
    for record in result["results"]:
        for key in ("problem", "size", "method", "seconds_median", "ratio_to_closed_form"):
            assert key in record
        assert "max_abs_error" in record
    assert (out_dir / "hessian_benchmark.png").is_file()
    assert "Verdicts" in completed.stdout
    assert "autograd.functional.hessian (vectorize=True)" in completed.stdout


def test_params_from_file(run_fragility, tmp_path) -> None:
    params_file = tmp_path / "params.json"
    params_file.write_text(json.dumps({"sizes": [-1]}), encoding="utf-8")
    completed = run_fragility(
        "run", "hessian_benchmark", "--params", params_file, "--out", tmp_path / "out"
    )
    assert completed.returncode == 2
    assert "sizes[0] must be a positive integer, got -1" in completed.stderr


def test_bad_param_one_line_error(run_fragility, tmp_path) -> None:
    out_dir = tmp_path / "out"
    completed = run_fragility(
        "run",
        "hessian_benchmark",
        "--params",
        json.dumps({"problems": ["rosenbrock"]}),
        "--out",
        out_dir,
    )
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "problems.0" in lines[0]
    assert "rosenbrock" in lines[0]
    assert "'quadratic'" in lines[0]
    assert not (out_dir / "result.json").exists()
