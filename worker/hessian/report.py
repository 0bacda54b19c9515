"""Verdict sentences against the published claim, and the text summary of a run.

The claim under test (Laue, Mitterreiter & Giesen, NeurIPS 2018): Hessians from a tensor-calculus
expression are up to two orders of magnitude faster than those of automatic-differentiation
frameworks on CPUs and about three orders of magnitude faster on GPUs. Every number in the
sentences comes from the measured records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.hessian.methods import METHOD_LABELS

# Speed-up of the closed form over automatic differentiation in the claim under test.
CLAIMED_SPEEDUP = {"cpu": 100, "cuda": 1000}

SIZE_SYMBOLS = {"quadratic": "n", "logistic_regression": "d", "matrix_factorization": "m"}


def describe_size(record: dict[str, Any]) -> str:
    """Return the size of a record as 'n=1000', or 'm=100 (Hessian 1000 x 1000)'."""
    symbol = SIZE_SYMBOLS.get(record["problem"], "size")
    text = f"{symbol}={record['size']}"
    if record["hessian_dim"] != record["size"]:
        side = record["hessian_dim"]
        text += f" (Hessian {side} x {side})"
    return text


def format_factor(factor: float) -> str:
    """Format a positive factor as '5550', '81.9' or '0.554': no exponent, three digits if small."""
    if factor >= 100:
        return f"{factor:.0f}"
    return f"{factor:.3g}"


def describe_ratio(ratio: float) -> str:
    """Return a time ratio to the closed form as '12.3x slower' or '1.5x faster'."""
    if ratio >= 1:
        return f"{format_factor(ratio)}x slower"
    return f"{format_factor(1 / ratio)}x faster"


def largest_size_records(
    results: Sequence[dict[str, Any]], method: str, problems: Sequence[str]
) -> list[dict[str, Any]]:
    """Return, per problem in order, the record of ``method`` at its largest measured size."""
    chosen = []
    for problem in problems:
        records = [r for r in results if r["method"] == method and r["problem"] == problem]
        if records:
            chosen.append(max(records, key=lambda record: record["size"]))
    return chosen


def verdict_sentence(
    method: str,
    results: Sequence[dict[str, Any]],
    problems: Sequence[str],
    device_type: str,
    skip_reason: str | None = None,
) -> str:
    """Return one sentence on whether the claimed speed-up over ``method`` holds on this machine.

    The claim holds when the closed form is at least the claimed factor faster (100x on CPU,
    1000x on GPU) on at least one problem at that method's largest measured size, because the
    paper claims "up to" that factor.
    """
    label = METHOD_LABELS[method]
    claim = CLAIMED_SPEEDUP[device_type]
    hardware = "GPU" if device_type == "cuda" else "CPU"
    records = largest_size_records(results, method, problems)
    if not records:
        reason = skip_reason or "no cell ran"
        return f"{label} was not measured on this {hardware}; {reason}."

    parts = [
        f"{describe_ratio(r['ratio_to_closed_form'])} on {r['problem']} at {describe_size(r)}"
        for r in records
    ]
    measured = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    best = max(records, key=lambda record: record["ratio_to_closed_form"])
    best_ratio = best["ratio_to_closed_form"]
    if best_ratio >= claim:
        outcome = f"the claimed speed-up holds ({format_factor(best_ratio)}x on {best['problem']})"
    elif best_ratio > 1:
        outcome = (
            "the claimed speed-up does not hold: the closed form is faster, but by at most "
            f"{format_factor(best_ratio)}x ({best['problem']})"
        )
    else:
        outcome = "the claimed speed-up does not hold: the closed form is not faster on any problem"
    return (
        f"Against the closed form on this {hardware}, {label} is {measured} (claim: the closed "
        f"form is up to {claim}x faster); {outcome}."
    )


def format_summary(result: dict[str, Any]) -> str:
    """Return the multi-line text summary that ``fragility run`` prints."""
    machine = result["machine"]
    lines = [
        f"Hessian benchmark on {machine['device']} ({machine['device_name']}, "
        f"{machine['torch_threads']} torch threads, {machine['cpu_count']} CPUs), "
        f"{machine['dtype']}, torch {machine['torch']}",
        f"{'problem':21s} {'size':>5s} {'method':20s} {'median s':>10s} {'ratio':>8s} "
        f"{'max abs err':>11s}",
    ]
    for record in result["results"]:
        flag = "  FLAGGED" if record["flagged"] else ""
        lines.append(
            f"{record['problem']:21s} {record['size']:5d} {record['method']:20s} "
            f"{record['seconds_median']:10.3g} {format_factor(record['ratio_to_closed_form']):>8s} "
            f"{record['max_abs_error']:11.2g}{flag}"
        )
    lines.append("Verdicts (ratio = method time / closed-form time, at the largest size):")
    lines.extend(f"- {sentence}" for sentence in result["verdicts"].values())
    for entry in result["skipped"]:
        where = ""
        if "problem" in entry:
            where = f" on {entry['problem']} at size {entry['size']}"
        lines.append(f"{entry['method']}{where}: {entry['reason']}")
    tolerance = result["params"]["error_tolerance"]
    for entry in result["flagged"]:
        lines.append(
            f"Flagged {entry['method']} on {entry['problem']} at size {entry['size']}: relative "
            f"error {entry['relative_error']:.3g} above {tolerance:g}"
        )
    lines.extend(f"Plot: {plot}" for plot in result["plots"])
    return "\n".join(lines)
