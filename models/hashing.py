"""SHA-256 of files, recorded in reports so a result can be traced to its exact model and input."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Return the hex SHA-256 of the file at ``path``, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
