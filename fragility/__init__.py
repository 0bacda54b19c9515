"""Fragility: audits whether an image classifier's saliency maps can be trusted."""

__version__ = "0.1.0"
