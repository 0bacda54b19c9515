"""Rank correlations between two maps: Spearman's rho and Kendall's tau-b."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _nan_to_zero(value: float) -> float:
    # A constant map has no ranking; scipy returns NaN, which we report as no correlation.
    return 0.0 if math.isnan(value) else float(value)


def spearman(original: np.ndarray, perturbed: np.ndarray) -> float:
    """Spearman rank correlation of two maps, flattened; ties get average ranks. In [-1, 1]."""
    return _nan_to_zero(stats.spearmanr(original.ravel(), perturbed.ravel()).statistic)


def kendall_tau(original: np.ndarray, perturbed: np.ndarray) -> float:
    """Kendall's tau-b of two maps, flattened (O(n log n) in scipy). In [-1, 1]."""
    return _nan_to_zero(stats.kendalltau(original.ravel(), perturbed.ravel()).statistic)
