"""run_hessian_benchmark end to end at tiny sizes, and the verdict sentences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import worker.hessian.benchmark as benchmark
from worker.context import JobCancelled, JobContext
from worker.hessian.benchmark import PLOT_NAME, run_hessian_benchmark
from worker.hessian.methods import JAX_MISSING_REASON
from worker.hessian.params import HessianBenchmarkParams
from worker.hessian.report import describe_ratio, format_factor, verdict_sentence
from worker.jobs import get_job_type

REQUIRED_KEYS = {
    "problem",
    "size",
    "method",
    "seconds_median",
    "ratio_to_closed_form",
    "max_abs_error",
}
TINY = {
    "sizes": [2, 3],
    "repeats": 2,
    "min_time_s": 0,
    "warmup": 1,
    "factorization_rank": 2,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, list[float]]:
    out_dir = tmp_path_factory.mktemp("hessian")
    fractions: list[float] = []
    context = JobContext(
        "test-job", on_progress=lambda fraction, message: fractions.append(fraction)
    )
    params = HessianBenchmarkParams(**TINY)
    result = run_hessian_benchmark(params, [], out_dir, context)
    return result, out_dir, fractions


def test_result_records(tiny_run) -> None:
    result, _, _ = tiny_run
    methods = ["closed_form", "torch_func", "autograd_rowwise", "autograd_vectorized"]
    if result["machine"]["jax"] is not None:
        methods.append("jax")
    # 3 problems x 2 sizes x each method that ran.
    assert len(result["results"]) == 3 * 2 * len(methods)
    for record in result["results"]:
        assert record.keys() >= REQUIRED_KEYS
        assert record["method"] in methods
        assert record["seconds_min"] <= record["seconds_median"] <= record["seconds_max"]
        assert record["repeats"] == 2
        assert not record["flagged"]
        if record["method"] == "closed_form":
            assert record["ratio_to_closed_form"] == 1.0
            assert record["max_abs_error"] == 0.0
        else:
            assert record["ratio_to_closed_form"] > 0
            assert record["max_abs_error"] < 1e-10


def test_result_is_json(tiny_run) -> None:
    result, _, _ = tiny_run
    decoded = json.loads(json.dumps(result))
    assert decoded["results"][0].keys() >= REQUIRED_KEYS
    assert decoded["machine"]["device"] == "cpu"
    assert decoded["machine"]["dtype"] == "float64"
    assert decoded["params"]["sizes"]["quadratic"] == [2, 3]


def test_plot_written(tiny_run) -> None:
    result, out_dir, _ = tiny_run
    assert result["plots"] == [PLOT_NAME]
    png = (out_dir / PLOT_NAME).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


def test_progress_reaches_one(tiny_run) -> None:
    result, _, fractions = tiny_run
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    # One report per (problem, size, method) cell of the methods that ran.
    assert len(fractions) == 3 * 2 * len(result["methods"])


def test_verdicts_and_summary(tiny_run) -> None:
    result, _, _ = tiny_run
    assert set(result["verdicts"]) == {
        "torch_func",
        "autograd_rowwise",
        "autograd_vectorized",
        "jax",
    }
    sentence = result["verdicts"]["torch_func"]
    ratio = next(
        r["ratio_to_closed_form"]
        for r in result["results"]
        if r["method"] == "torch_func" and r["problem"] == "quadratic" and r["size"] == 3
    )
    assert "on quadratic at n=3" in sentence
    assert describe_ratio(ratio) in sentence
    assert "claim: the closed form is up to 100x faster" in sentence
    summary = result["summary"]
    assert len(summary.splitlines()) > 10
    assert sentence in summary


def test_jax_skip_reported(tiny_run) -> None:
    result, _, _ = tiny_run
    if result["machine"]["jax"] is not None:
        pytest.skip("JAX is installed, so the jax method ran")
    assert {"method": "jax", "reason": JAX_MISSING_REASON} in result["skipped"]
    assert JAX_MISSING_REASON in result["verdicts"]["jax"]
    assert "was not measured" in result["verdicts"]["jax"]


def test_rowwise_skipped_above_limit(tmp_path: Path) -> None:
    params = HessianBenchmarkParams(
        problems=["quadratic"],
        methods=["autograd_rowwise"],
        sizes=[2, 5],
        rowwise_max_dim=3,
        repeats=1,
        min_time_s=0,
        warmup=0,
    )
    result = run_hessian_benchmark(params, [], tmp_path, JobContext())
    measured = [(r["method"], r["size"]) for r in result["results"]]
    assert measured == [("closed_form", 2), ("autograd_rowwise", 2), ("closed_form", 5)]
    (skip,) = result["skipped"]
    assert skip["method"] == "autograd_rowwise"
    assert skip["size"] == 5
    assert "rowwise_max_dim 3" in skip["reason"]


def test_inaccurate_method_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_make_call = benchmark.make_hessian_call

    def make_call_with_bias(method, problem):
        call = real_make_call(method, problem)
        if method != "torch_func":
            return call
        return lambda: call() + 1e-4  # a relative error far above the 1e-6 tolerance

    monkeypatch.setattr(benchmark, "make_hessian_call", make_call_with_bias)
    params = HessianBenchmarkParams(
        problems=["quadratic"], methods=["torch_func"], sizes=[3], repeats=1, warmup=0, min_time_s=0
    )
    result = run_hessian_benchmark(params, [], tmp_path, JobContext())
    record = next(r for r in result["results"] if r["method"] == "torch_func")
    assert record["flagged"]
    assert record["max_abs_error"] == pytest.approx(1e-4)
    assert result["flagged"] == [
        {
            "problem": "quadratic",
            "size": 3,
            "method": "torch_func",
            "relative_error": record["relative_error"],
        }
    ]
    assert "Flagged torch_func on quadratic at size 3" in result["summary"]


def test_float32_run(tmp_path: Path) -> None:
    params = HessianBenchmarkParams(
        problems=["logistic_regression"],
        methods=["torch_func", "autograd_vectorized"],
        sizes=[4],
        dtype="float32",
        repeats=1,
        min_time_s=0,
    )
    result = run_hessian_benchmark(params, [], tmp_path, JobContext())
    assert result["machine"]["dtype"] == "float32"
    assert result["params"]["error_tolerance"] == 1e-3
    for record in result["results"]:
        assert not record["flagged"]
        assert record["relative_error"] < 1e-5


def test_cancel_stops_before_next_cell(tmp_path: Path) -> None:
    fractions: list[float] = []
    context = JobContext(
        "cancelled-job",
        on_progress=lambda fraction, message: fractions.append(fraction),
        is_cancelled=lambda: len(fractions) >= 2,
    )
    params = HessianBenchmarkParams(
        problems=["quadratic"], sizes=[2], repeats=1, threads=1, min_time_s=0
    )
    previous = torch.get_num_threads()
    with pytest.raises(JobCancelled):
        run_hessian_benchmark(params, [], tmp_path, context)
    assert len(fractions) == 2
    assert not (tmp_path / PLOT_NAME).exists()
    assert torch.get_num_threads() == previous


def test_threads_set_and_restored(tmp_path: Path) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        params = HessianBenchmarkParams(
            problems=["quadratic"],
            methods=["closed_form"],
            sizes=[2],
            repeats=1,
            threads=1,
            min_time_s=0,
        )
        result = run_hessian_benchmark(params, [], tmp_path, JobContext())
        assert result["machine"]["torch_threads"] == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_input_files_rejected(tmp_path: Path) -> None:
    params = HessianBenchmarkParams(problems=["quadratic"], sizes=[2])
    with pytest.raises(ValueError, match="takes no input files, got 1"):
        run_hessian_benchmark(params, [tmp_path / "image.png"], tmp_path, JobContext())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_missing_rejected(tmp_path: Path) -> None:
    params = HessianBenchmarkParams(problems=["quadratic"], sizes=[2], device="cuda")
    with pytest.raises(ValueError, match="device is 'cuda' but torch finds no CUDA device"):
        run_hessian_benchmark(params, [], tmp_path, JobContext())


def test_registered_job_type() -> None:
    job_type = get_job_type("hessian_benchmark")
    assert job_type.params_model is HessianBenchmarkParams
    assert job_type.input_files == "none"
    assert job_type.load_runner() is run_hessian_benchmark


def record(problem: str, size: int, ratio: float) -> dict:
    return {
        "problem": problem,
        "size": size,
        "hessian_dim": size * 10 if problem == "matrix_factorization" else size,
        "method": "torch_func",
        "ratio_to_closed_form": ratio,
    }


def test_verdict_holds_when_claim_reached() -> None:
    records = [record("quadratic", 10, 500.0), record("quadratic", 1000, 150.0)]
    sentence = verdict_sentence("torch_func", records, ["quadratic"], "cpu")
    assert "150x slower on quadratic at n=1000" in sentence
    assert "the claimed speed-up holds (150x on quadratic)" in sentence


def test_verdict_fails_below_claim() -> None:
    records = [record("quadratic", 1000, 20.0), record("matrix_factorization", 100, 35.0)]
    problems = ["quadratic", "matrix_factorization"]
    sentence = verdict_sentence("torch_func", records, problems, "cpu")
    assert "matrix_factorization at m=100 (Hessian 1000 x 1000)" in sentence
    assert "does not hold: the closed form is faster, but by at most 35x" in sentence


def test_verdict_gpu_claim_and_faster_method() -> None:
    records = [record("quadratic", 1000, 0.5)]
    sentence = verdict_sentence("torch_func", records, ["quadratic"], "cuda")
    assert "on this GPU" in sentence
    assert "2x faster on quadratic" in sentence
    assert "up to 1000x faster" in sentence
    assert "the closed form is not faster on any problem" in sentence


def test_format_factor() -> None:
    assert format_factor(5549.6) == "5550"
    assert format_factor(81.94) == "81.9"
    assert format_factor(0.5541) == "0.554"


def test_min_time_adds_repeats(tmp_path: Path) -> None:
    params = HessianBenchmarkParams(
        problems=["quadratic"],
        methods=["closed_form"],
        sizes=[2],
        repeats=2,
        min_time_s=0.01,
        max_repeats=50,
    )
    result = run_hessian_benchmark(params, [], tmp_path, JobContext())
    (record,) = result["results"]
    # A 2 x 2 closed form takes microseconds, so 0.01 s is not reached before the cap.
    assert record["repeats"] == 50
