"""/v1/models: register a model from a spec and its weights, list and show models."""

from __future__ import annotations

import json
import os
import shutil
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import ValidationError

from app.errors import ApiError, validation_error
from app.forms import parse_json_field
from app.model_files import weights_extension
from app.schemas.errors import ERROR_RESPONSES
from app.schemas.jobs import to_datetime
from app.schemas.models import ModelList, ModelView
from app.services import ServicesDep
from app.uploads import read_upload
from models.hashing import file_sha256
from models.spec import BUILTIN_PREFIX, ModelSpec, list_builtin_models
from worker.store import ModelRecord
from worker.store.files import is_valid_id, new_id

router = APIRouter(prefix="/v1", tags=["models"], responses=ERROR_RESPONSES)

# Largest spec sent as a file part, equal to Starlette's default limit on a text form field.
MAX_SPEC_BYTES = 1024 * 1024


@lru_cache(maxsize=32)
def _builtin_view(name: str) -> ModelView:
    spec_path = list_builtin_models()[name]
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    weights_path = spec_path.parent / spec["weights"]
    return ModelView(
        reference=f"{BUILTIN_PREFIX}{name}",
        id=None,
        builtin=True,
        created_at=None,
        status=None,
        spec=spec,
        spec_sha256=file_sha256(spec_path),
        weights_sha256=file_sha256(weights_path),
    )


def _registered_view(record: ModelRecord) -> ModelView:
    return ModelView(
        reference=record.id,
        id=record.id,
        builtin=False,
        created_at=to_datetime(record.created_at),
        status=record.status,
        status_message=record.status_message,
        spec=record.spec,
        spec_sha256=record.spec_sha256,
        weights_sha256=record.weights_sha256,
    )


def _spec_text(spec: str | UploadFile) -> str:
    """Return the spec's JSON text, from a text form field or from an uploaded file part."""
    if isinstance(spec, str):
        return spec
    data = spec.file.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise ApiError(
            413,
            f"spec: the file is over {MAX_SPEC_BYTES} bytes; a spec is a small JSON object",
            "spec",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ApiError(
            422,
            f"spec: the file is not UTF-8 text (invalid byte at position {error.start})",
            "spec",
        ) from None


def _parse_spec(spec: str | UploadFile) -> dict[str, Any]:
    raw = parse_json_field(_spec_text(spec), "spec")
    if not isinstance(raw, dict):
        raise ApiError(422, f"spec: must be a JSON object, got {type(raw).__name__}", "spec")
    return raw


@router.post("/models", status_code=201, response_model=ModelView)
def register_model(
    response: Response,
    spec: Annotated[
        str | UploadFile,
        Form(
            description="The model spec as JSON, as for the command line (format, arch, "
            "num_classes, channels, input_size, mean, std, class_names), sent as a text field "
            "(curl -F 'spec=<spec.json') or as a file part (curl -F spec=@spec.json). 'weights' "
            "may be omitted: the uploaded file is used."
        ),
    ],
    weights: Annotated[
        UploadFile,
        File(description="safetensors or torch.save state_dict, or a TorchScript archive."),
    ],
    services: ServicesDep,
) -> ModelView:
    """Register a model; audits then use its id as ``model``.

    The API checks the spec and the file's container format. It cannot load the weights because
    it has no torch. The first job that uses the model loads them and sets ``status`` to
    "verified" or "invalid". That job then fails with the loading error, and later submissions
    that name an invalid model are rejected with 422.
    """
    raw = _parse_spec(spec)
    model_id = new_id()
    data = read_upload(
        weights, "weights", services.settings.max_model_bytes, "FRAGILITY_MAX_MODEL_BYTES"
    )
    raw_format = raw.get("format")
    extension = weights_extension(data, raw_format if isinstance(raw_format, str) else "")
    raw["weights"] = f"weights{extension}"
    try:
        validated = ModelSpec.model_validate(raw)
    except ValidationError as error:
        raise validation_error(error, ("spec",)) from None

    stored_spec = validated.model_dump(mode="json", exclude_none=True)
    target = services.storage.model_dir(model_id)
    staging = services.storage.tmp_dir / f"model-{model_id}"
    staging.mkdir(parents=True)
    try:
        (staging / stored_spec["weights"]).write_bytes(data)
        (staging / "spec.json").write_text(json.dumps(stored_spec, indent=2), encoding="utf-8")
        spec_sha256 = file_sha256(staging / "spec.json")
        weights_sha256 = file_sha256(staging / stored_spec["weights"])
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = services.models.add(model_id, stored_spec, spec_sha256, weights_sha256)
    response.headers["Location"] = f"/v1/models/{model_id}"
    return _registered_view(record)


@router.get("/models", response_model=ModelList)
def list_models(services: ServicesDep) -> ModelList:
    """List the builtin models and the registered ones."""
    builtins = [_builtin_view(name) for name in list_builtin_models()]
    registered = [_registered_view(record) for record in services.models.list()]
    return ModelList(models=builtins + registered)


@router.get("/models/{reference}", response_model=ModelView)
def get_model(reference: str, services: ServicesDep) -> ModelView:
    """Show one model by 'builtin:NAME' or by registered id."""
    if reference.startswith(BUILTIN_PREFIX):
        name = reference[len(BUILTIN_PREFIX) :]
        if name in list_builtin_models():
            return _builtin_view(name)
    elif is_valid_id(reference):
        record = services.models.get(reference)
        if record is not None:
            return _registered_view(record)
    raise ApiError(404, f"model {reference!r} not found", "reference")
