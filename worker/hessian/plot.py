"""Log-log plot of Hessian time against size, one panel per problem, written as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from worker.hessian.methods import METHOD_LABELS

SIZE_LABELS = {
    "quadratic": "n (length of x; Hessian n x n)",
    "logistic_regression": "d (features; Hessian d x d)",
    "matrix_factorization": "m (rows of U; Hessian (m r) x (m r))",
}


def plot_timings(
    results: Sequence[dict[str, Any]], problems: Sequence[str], path: Path, title: str
) -> Path:
    """Write a PNG with one log-log panel per problem: median seconds against size per method.

    Error bars span the min and max over the repeats. Uses the Agg canvas directly, so no
    display and no pyplot state are involved.

    Args:
        results: result records with problem, size, method, seconds_median/min/max.
        problems: the panels, in order.
        path: the PNG to write.
        title: figure title (for example the device and dtype).

    Returns:
        ``path``.
    """
    figure = Figure(figsize=(5.0 * len(problems), 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(1, len(problems), squeeze=False)[0]
    for axes, problem in zip(axes_list, problems, strict=True):
        records = [record for record in results if record["problem"] == problem]
        for method in METHOD_LABELS:
            points = sorted(
                (record for record in records if record["method"] == method),
                key=lambda record: record["size"],
            )
            if not points:
                continue
            sizes = [record["size"] for record in points]
            medians = [record["seconds_median"] for record in points]
            below = [record["seconds_median"] - record["seconds_min"] for record in points]
            above = [record["seconds_max"] - record["seconds_median"] for record in points]
            axes.errorbar(
                sizes,
                medians,
                yerr=[below, above],
                marker="o",
                markersize=4,
                capsize=2,
                label=METHOD_LABELS[method],
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_title(problem)
        axes.set_xlabel(SIZE_LABELS.get(problem, "size"))
        axes.set_ylabel("seconds per Hessian (median)")
        axes.grid(True, which="both", alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize="small")
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return path
