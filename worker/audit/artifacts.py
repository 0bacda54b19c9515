"""Write one image's report and artifacts into a directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from worker.audit.audit import AuditResult
from worker.audit.figures import save_comparison_figure, save_image_png, save_map_png

logger = logging.getLogger(__name__)

ARTIFACTS = {
    "report.json": "the full report",
    "original.png": "the model input (after conversion), 8-bit",
    "perturbed.png": "the attacked input rounded to 8 bits",
    "perturbed.npy": "the attacked input as float32 (C, H, W) in [0, 1]",
    "baseline.png": "the random-baseline input rounded to 8 bits",
    "saliency_original.png": "saliency map of the original",
    "saliency_perturbed.png": "saliency map of the attacked input",
    "saliency_baseline.png": "saliency map of the random-baseline input",
    "comparison.png": "images and maps side by side, top-k pixels marked",
}


def write_artifacts(result: AuditResult, out_dir: Path) -> dict[str, Any]:
    """Write the PNGs, the .npy and report.json into ``out_dir``; return the final report.

    report.json is written last, through a temporary file and a rename, so a directory with a
    report.json always contains a complete set.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    # Small maps are enlarged so a person can see single pixels.
    scale = max(1, 256 // max(result.original_map.shape))
    save_image_png(result.original, out_dir / "original.png")
    save_image_png(result.perturbed, out_dir / "perturbed.png")
    save_image_png(result.baseline, out_dir / "baseline.png")
    np.save(out_dir / "perturbed.npy", result.perturbed.numpy().astype(np.float32))
    save_map_png(result.original_map, out_dir / "saliency_original.png", scale)
    save_map_png(result.perturbed_map, out_dir / "saliency_perturbed.png", scale)
    save_map_png(result.baseline_map, out_dir / "saliency_baseline.png", scale)
    report = dict(result.report)
    report["artifacts"] = ARTIFACTS
    save_comparison_figure(
        out_dir / "comparison.png",
        original=result.original,
        perturbed=result.perturbed,
        baseline=result.baseline,
        original_map=result.original_map,
        perturbed_map=result.perturbed_map,
        baseline_map=result.baseline_map,
        k=result.k,
        report=report,
    )
    temporary = out_dir / "report.json.tmp"
    temporary.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    temporary.replace(out_dir / "report.json")
    return report
