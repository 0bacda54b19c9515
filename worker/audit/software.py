"""Versions of the software an audit ran with, for the report."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("fragility-audit", "torch", "torchvision", "numpy", "scipy", "pillow", "captum")


def software_versions() -> dict[str, str]:
    """Return {package: version} for the packages that shape an audit's numbers."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
