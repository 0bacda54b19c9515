"""The audit parameters as multipart form fields, shared by POST /v1/audits and /v1/batches.

The routes read the multipart body with Starlette directly instead of declaring one FastAPI
``Form`` parameter per field: FastAPI's per-field extraction cost more CPU than the rest of a
submission together. ``AuditForm`` documents the fields in OpenAPI (see request_body_schema).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from app.errors import ApiError

# Text fields a form may have. The audit form has far fewer, so this only stops a request with
# thousands of parts before the checks below name the unknown field.
MAX_FORM_FIELDS = 100


class AuditForm(BaseModel):
    """The text fields of an audit submission (OpenAPI documentation only).

    Values stay strings: AuditParams converts them, so an invalid value is reported by the same
    validator, with the same message, as in the command line.
    """

    model: str = Field(
        description="'builtin:NAME' or the id of a registered model (GET /v1/models)."
    )
    method: str | None = Field(
        None,
        description="Saliency method: gradient (default), gradient_x_input, "
        "integrated_gradients or smoothgrad.",
    )
    attack: str | None = Field(
        None, description="Attack: topk (default), center_of_mass, targeted, manipulate, random."
    )
    epsilon: str | None = Field(
        None, description="L-infinity budget in [0, 1] pixel units, such as 0.03 or 8/255."
    )
    steps: str | None = Field(None, description="Attack iterations (default 100).")
    step_size: str | None = Field(
        None, description="Step per iteration in pixel units (default epsilon/16)."
    )
    k: str | None = Field(None, description="Pixels in the top-k set (default 2% of the map).")
    seed: str | None = Field(None, description="Seed of every random draw (default 0).")
    params: str | None = Field(
        None,
        description="JSON object with any other audit parameter (see GET /v1/job-types), for "
        'example {"target_box": [0, 0, 8, 8]}. A name may not also be given as its own field.',
    )


TEXT_FIELDS: tuple[str, ...] = tuple(AuditForm.model_fields)


def request_body_schema(file_field: str, description: str, many: bool) -> dict[str, Any]:
    """Return the OpenAPI ``requestBody`` of a multipart audit form with a file field."""
    schema = AuditForm.model_json_schema()
    binary = {"type": "string", "format": "binary"}
    file_schema = {"type": "array", "items": binary} if many else binary
    schema["properties"][file_field] = {**file_schema, "description": description}
    schema["required"] = [file_field, "model"]
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


@asynccontextmanager
async def multipart_form(
    request: Request, file_field: str, max_files: int, too_many_files: str
) -> AsyncIterator[FormData]:
    """Parse a multipart form with limits on its parts, and close its files afterwards.

    Starlette stops reading at ``max_files`` files or MAX_FORM_FIELDS text fields and raises a
    400 with its own message. This turns both into 422 errors in this API's format.

    Args:
        request: the request.
        file_field: the form field that holds the files, named in the error.
        max_files: files Starlette reads before it stops.
        too_many_files: the error detail when the form has more than ``max_files`` files.

    Raises:
        ApiError: 422 naming ``file_field`` for too many files, 422 for too many text fields.
    """
    try:
        form = await request.form(max_files=max_files, max_fields=MAX_FORM_FIELDS)
    except HTTPException as error:
        # Starlette's messages are the only way to tell its limits apart from a malformed body.
        detail = str(error.detail)
        if error.status_code == 400 and detail.startswith("Too many files"):
            raise ApiError(422, too_many_files, file_field) from None
        if error.status_code == 400 and detail.startswith("Too many fields"):
            known = ", ".join((file_field, *TEXT_FIELDS))
            raise ApiError(
                422,
                f"the form has more than {MAX_FORM_FIELDS} text fields; the fields are {known}",
            ) from None
        raise
    try:
        yield form
    finally:
        await form.close()


def files_of(form: FormData, field: str) -> list[UploadFile]:
    """Return the uploaded files of ``field``.

    Raises:
        ApiError: 422 naming ``field`` when it contains text instead of a file.
    """
    values = form.getlist(field)
    for value in values:
        if not isinstance(value, UploadFile):
            raise ApiError(422, f"{field}: must be a file upload, got a text field", field)
    return values


def parse_json_field(text: str, field: str) -> Any:
    """Parse the JSON text of a form field.

    Raises:
        ApiError: 422 naming ``field`` when the text is not JSON or nests too deeply for the
            parser (Python's json module raises RecursionError at about 1000 levels).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ApiError(
            422, f"{field}: not valid JSON ({error.msg} at position {error.pos})", field
        ) from None
    except RecursionError:
        raise ApiError(
            422, f"{field}: the JSON nests too deeply to parse; give a flat JSON object", field
        ) from None


def audit_params_from_form(form: FormData, file_field: str) -> dict[str, Any]:
    """Collect the text fields of an audit form into a raw parameter dict for AuditParams.

    Raises:
        ApiError: 422 naming the field for a missing ``model``, an unknown field, a field given
            twice, or ``params`` that is not a JSON object or repeats a named field.
    """
    for name in form:
        if name != file_field and name not in TEXT_FIELDS:
            known = ", ".join((file_field, *TEXT_FIELDS))
            raise ApiError(422, f"{name}: unknown form field; the fields are {known}", name)
    named: dict[str, str] = {}
    for name in TEXT_FIELDS:
        values = form.getlist(name)
        if len(values) > 1:
            raise ApiError(422, f"{name}: given {len(values)} times; give it once", name)
        if values and not isinstance(values[0], str):
            raise ApiError(422, f"{name}: must be a text field, got a file", name)
        if values and values[0] != "":
            named[name] = values[0]
    if "model" not in named:
        raise ApiError(422, "model is required: 'builtin:NAME' or a registered model id", "model")

    raw: dict[str, Any] = {}
    text = named.pop("params", None)
    if text is not None:
        raw = parse_json_field(text, "params")
        if not isinstance(raw, dict):
            raise ApiError(
                422, f"params: must be a JSON object, got {type(raw).__name__}", "params"
            )
    for name, value in named.items():
        if name in raw:
            raise ApiError(
                422, f"params: {name!r} is given both as a form field and inside params", "params"
            )
        raw[name] = value
    return raw
