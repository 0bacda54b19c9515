"""Fixtures shared by tests/audit and tests/models: the bundled digits model, its held-out sample
images, and a runner for the ``fragility`` command line in a subprocess.

torch is imported inside the fixtures, so test directories that never use them (the service
tests) do not pay for importing it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLES_DIR = REPO_ROOT / "models" / "builtin" / "samples"

# A command that imports torch takes a few seconds; this bounds a hung one.
CLI_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def digit_samples() -> list[Path]:
    """The 20 held-out digit images shipped with builtin:digits_cnn, two per class, sorted."""
    paths = sorted(SAMPLES_DIR.glob("digits_cnn_*.png"))
    if len(paths) != 20:
        raise RuntimeError(f"expected 20 digits_cnn samples in {SAMPLES_DIR}, found {len(paths)}")
    return paths


@pytest.fixture
def digits_model():
    """A fresh builtin:digits_cnn LoadedModel on the CPU; tests may change its state."""
    from models.loading import load_model

    return load_model("builtin:digits_cnn", device="cpu")


@pytest.fixture(scope="session")
def run_fragility() -> Callable[..., subprocess.CompletedProcess]:
    """Return a function that runs ``python -m fragility ARGS`` and captures its output.

    The function takes the arguments as strings or paths, and optional ``env`` entries that are
    added to the current environment. It runs from the repository root with one torch thread.
    """

    def run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        return subprocess.run(
            [sys.executable, "-m", "fragility", *map(str, args)],
            cwd=REPO_ROOT,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    return run
