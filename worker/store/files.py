"""The storage directory shared by the API and the workers.

Layout under the root (``FRAGILITY_STORAGE_DIR``)::

    tmp/                         registered model files being written
    inputs/{input_id}/input.EXT  an uploaded image, under a generated id (never a client name)
    jobs/{job_id}/work-{token}/  output of one attempt, while it runs
    jobs/{job_id}/artifacts/     output of the attempt that succeeded (report.json, PNG, NPY)
    models/{model_id}/           spec.json and the weights file of a registered model

Job messages carry only ids; each side maps them to paths here, so API and workers must mount
the same directory.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

_ID_PATTERN = re.compile(r"[0-9a-f]{32}")


def new_id() -> str:
    """Return a fresh identifier: 32 lowercase hex digits (a random UUID)."""
    return uuid.uuid4().hex


def is_valid_id(value: str) -> bool:
    """Return True when ``value`` has the shape of an id from new_id()."""
    # fullmatch, because "$" would also accept a trailing newline.
    return _ID_PATTERN.fullmatch(value) is not None


def _require_id(value: str, name: str) -> str:
    if not is_valid_id(value):
        raise ValueError(f"{name} must be 32 lowercase hex digits, got {value!r}")
    return value


class Storage:
    """Paths of inputs, job outputs and registered models under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def store_input(self, data: bytes, extension: str) -> str:
        """Write a validated upload to inputs/{new id}/input{extension}; return the id.

        The file is written in place, without a temporary file: no job names the id until the
        write has finished, so no reader can see it half-written.
        """
        input_id = new_id()
        directory = self.root / "inputs" / input_id
        directory.mkdir(parents=True)
        with (directory / f"input{extension}").open("xb") as handle:
            handle.write(data)
        return input_id

    def input_path(self, input_id: str) -> Path:
        """Return the stored file of ``input_id``.

        Raises:
            FileNotFoundError: no input with that id is stored.
        """
        directory = self.root / "inputs" / _require_id(input_id, "input_id")
        files = sorted(directory.glob("input*")) if directory.is_dir() else []
        if not files:
            raise FileNotFoundError(f"input {input_id} not found under {directory}")
        return files[0]

    def delete_input(self, input_id: str) -> None:
        """Remove a stored input (used when a request fails after storing some of its files)."""
        shutil.rmtree(self.root / "inputs" / _require_id(input_id, "input_id"), ignore_errors=True)

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / _require_id(job_id, "job_id")

    def work_dir(self, job_id: str, token: str) -> Path:
        """Return a fresh, empty output directory for one attempt of a job."""
        directory = self.job_dir(job_id) / f"work-{_require_id(token, 'token')}"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return directory

    def artifacts_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "artifacts"

    def publish_artifacts(self, job_id: str, work_dir: Path) -> Path:
        """Make an attempt's output the job's artifacts, replacing any from an earlier attempt."""
        target = self.artifacts_dir(job_id)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work_dir, target)
        return target

    def remove_work_dirs(self, job_id: str) -> None:
        """Delete the output of attempts that did not succeed (after a kill or a failure)."""
        for directory in self.job_dir(job_id).glob("work-*"):
            shutil.rmtree(directory, ignore_errors=True)

    def list_artifacts(self, job_id: str) -> list[tuple[str, int]]:
        """Return (relative POSIX path, size in bytes) of every artifact, sorted by path."""
        root = self.artifacts_dir(job_id)
        if not root.is_dir():
            return []
        return [
            (path.relative_to(root).as_posix(), path.stat().st_size)
            for path in sorted(root.rglob("*"))
            if path.is_file() and not path.is_symlink()
        ]

    def artifact_path(self, job_id: str, name: str) -> Path | None:
        """Return the path of artifact ``name``, or None when it does not exist.

        ``name`` is a relative path as list_artifacts returns it. A name that resolves outside
        the artifacts directory (``..``, an absolute path, a symlink) or that contains a NUL
        byte (which no file name can) is treated as missing.
        """
        if "\x00" in name:
            return None
        root = self.artifacts_dir(job_id).resolve()
        candidate = (root / name).resolve()
        if not candidate.is_relative_to(root) or candidate == root:
            return None
        if not candidate.is_file():
            return None
        return candidate

    def model_dir(self, model_id: str) -> Path:
        return self.root / "models" / _require_id(model_id, "model_id")
