"""Structural similarity (SSIM) and Pearson correlation of two maps."""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity


def _scale_to_unit(values: np.ndarray) -> np.ndarray:
    peak = float(np.abs(values).max())
    return values / peak if peak > 0 else values


def ssim(original: np.ndarray, perturbed: np.ndarray) -> float:
    """SSIM of two (H, W) maps, each divided by its max |value| first, data range 1 (or 2 when
    signed). The 7x7 window shrinks to the largest odd size that fits small maps."""
    a = _scale_to_unit(original.astype(np.float64))
    b = _scale_to_unit(perturbed.astype(np.float64))
    data_range = 2.0 if (a.min() < 0 or b.min() < 0) else 1.0
    window = min(7, min(a.shape) - (1 - min(a.shape) % 2))
    if window < 3:
        raise ValueError(f"SSIM needs maps of at least 3x3 pixels, got {a.shape}")
    return float(structural_similarity(a, b, data_range=data_range, win_size=window))


def pearson(original: np.ndarray, perturbed: np.ndarray) -> float:
    """Pearson correlation of two maps, flattened; 0 when either map is constant."""
    a = original.ravel().astype(np.float64)
    b = perturbed.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    value = float(np.corrcoef(a, b)[0, 1])
    return 0.0 if math.isnan(value) else value
