"""Dissimilarity between an original saliency map and a perturbed one.

Each metric has its own module; ``compare_maps`` computes all of them for one pair of maps.
"""

from worker.audit.metrics.compare import MapComparison, compare_maps, default_k

__all__ = ["MapComparison", "compare_maps", "default_k"]
