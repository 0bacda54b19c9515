"""Checks on an uploaded model file that need no torch: the container format, never unpickled.

Accepted weights files:
- safetensors: an 8-byte little-endian header length, then a JSON header;
- a zip archive written by ``torch.save`` (contains ``data.pkl``; the worker reads it with
  ``torch.load(weights_only=True)``, which unpickles tensors and plain containers only);
- for ``format: torchscript``, a zip archive written by ``torch.jit.save`` (contains ``code/``).

The legacy, non-zip ``torch.save`` format is rejected: it is a bare pickle stream.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile

from app.errors import ApiError

SAFETENSORS_MAX_HEADER_BYTES = 100 * 1024 * 1024


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (header_length,) = struct.unpack("<Q", data[:8])
    if not 2 <= header_length <= min(SAFETENSORS_MAX_HEADER_BYTES, len(data) - 8):
        return False
    try:
        header = json.loads(data[8 : 8 + header_length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(header, dict)


def _zip_names(data: bytes) -> list[str] | None:
    if data[:4] != b"PK\x03\x04":
        return None
    try:
        return zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None


def weights_extension(data: bytes, model_format: str, field: str = "weights") -> str:
    """Return the file extension to store the weights under, after checking the container.

    Raises:
        ApiError: 422 naming ``field`` when the file is not of a type ``model_format`` accepts.
    """
    names = _zip_names(data)
    if model_format == "torchscript":
        if names is not None and any("/code/" in f"/{name}" for name in names):
            return ".pt"
        raise ApiError(
            422,
            f"{field}: format 'torchscript' needs a TorchScript archive saved with "
            "torch.jit.save(torch.jit.script(model), path); this file is not one",
            field,
        )
    if _is_safetensors(data):
        return ".safetensors"
    if model_format == "builtin":
        raise ApiError(
            422,
            f"{field}: format 'builtin' needs a safetensors file "
            "(safetensors.torch.save_file(model.state_dict(), path))",
            field,
        )
    if names is not None and any(name.endswith("data.pkl") for name in names):
        return ".pt"
    if data[:1] == b"\x80":
        raise ApiError(
            422,
            f"{field}: this is a legacy pickle file, which the service does not load; save the "
            "state_dict with safetensors or with torch.save in its default zip format",
            field,
        )
    raise ApiError(
        422,
        f"{field}: not a safetensors file nor a torch.save archive of a state_dict",
        field,
    )
