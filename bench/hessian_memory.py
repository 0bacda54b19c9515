"""Measure the peak resident memory of one Hessian per method, against the job's estimate.

Calibrates ``MEMORY_FACTOR`` in ``worker/hessian/params.py``: for each cell it prints the peak
increase of resident memory during one call and its ratio to the estimate without the factor.
A ratio above MEMORY_FACTOR means the estimate is too low. Each cell runs in a fresh process
because the peak (VmHWM) is per process. Linux only: it reads /proc/self/status and resets the
peak through /proc/self/clear_refs. CPU and float64 only.

Usage::

    .venv/bin/python bench/hessian_memory.py                  # the default cells
    .venv/bin/python bench/hessian_memory.py quadratic 2000   # one problem and size
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

DEFAULT_CELLS = [
    ("quadratic", 1000),
    ("quadratic", 2000),
    ("logistic_regression", 1000),
    ("logistic_regression", 2000),
    ("matrix_factorization", 100),
    ("matrix_factorization", 150),
]
METHODS = ["closed_form", "torch_func", "autograd_rowwise", "autograd_vectorized"]


def read_status_bytes(key: str) -> int:
    """Return a field of /proc/self/status (given in kB there) in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not found in /proc/self/status")


def measure_one(problem_name: str, size: int, method: str) -> dict[str, float]:
    """Compute one Hessian in this process and return the peak memory increase and estimate."""
    import torch

    from worker.hessian.methods import make_hessian_call
    from worker.hessian.params import MEMORY_FACTOR, HessianBenchmarkParams
    from worker.hessian.problems import build_problem

    params = HessianBenchmarkParams(problems=[problem_name], sizes=[1])
    cpu = torch.device("cpu")
    # One small call first, so that library loading is not counted.
    make_hessian_call(method, build_problem(problem_name, 2, params, torch.float64, cpu))()
    problem = build_problem(problem_name, size, params, torch.float64, cpu)
    call = make_hessian_call(method, problem)

    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current VmRSS
    before = read_status_bytes("VmRSS")
    call()
    increase = read_status_bytes("VmHWM") - before
    data = sum(tensor.numel() * 8 for tensor in problem.tensors.values())
    counted = params.estimate_peak_bytes(problem_name, size, method) / MEMORY_FACTOR
    return {"increase": increase, "data": data, "counted": counted}


def main() -> int:
    """Measure the requested cells, each in a child process, and print one line per cell."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problem", nargs="?", help="one problem (default: the default cells)")
    parser.add_argument("size", nargs="?", type=int, help="its size")
    parser.add_argument("--method", help="one method (default: all torch methods)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure_one(args.problem, args.size, args.method)))
        return 0

    cells = [(args.problem, args.size)] if args.problem else DEFAULT_CELLS
    methods = [args.method] if args.method else METHODS
    print(f"{'problem':21s} {'size':>5s} {'method':20s} {'peak MiB':>9s} {'ratio':>6s}")
    for problem_name, size in cells:
        for method in methods:
            command = [sys.executable, __file__, problem_name, str(size)]
            command += ["--method", method, "--child"]
            output = subprocess.run(command, capture_output=True, text=True, check=True)
            measured = json.loads(output.stdout.strip().splitlines()[-1])
            # The data existed before the reset, so add it back to compare with the count.
            ratio = (measured["increase"] + measured["data"]) / measured["counted"]
            print(
                f"{problem_name:21s} {size:5d} {method:20s} "
                f"{measured['increase'] / 2**20:9.1f} {ratio:6.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
