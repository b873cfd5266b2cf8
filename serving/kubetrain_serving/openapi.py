"""The OpenAPI document the service publishes, made to tell the truth.

BentoML generates `/docs.json` from the API signatures, but it does not know what
`RequestGuard` (guard.py) does in front of them: every error leaves as `{"error": str,
"detail": [{"loc", "msg"}]}` (BentoML declares `detail` a string), too large bodies and
too many images are 413, other content types 415, overload 503, and `/classify` also
takes a bare JSON list or multipart files. It also cannot say that a string is an
image. `describe` rewrites the generated document so that a client generator (or a
contract fuzzer such as schemathesis) sees exactly what the server accepts and sends:

- image strings get `format: kubetrain-image` (a base64-encoded PNG or JPEG; any size or
  colour mode, converted like the trainer does) and `minLength: 1`; the image list
  gets `maxItems`;
- each inference endpoint declares 400/413/415/503/500 with the one error schema and
  drops BentoML's 404 (these routes always exist);
- `/classify` lists its other encodings.

Pure: a dict in, a new dict out; the guard calls it on BentoML's response.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

IMAGE_FORMAT = "kubetrain-image"
"""The string format of an image in a request: base64 of a PNG or JPEG file."""

ERROR_SCHEMA = "Error"
IMAGE_SCHEMA = "Image"

_ERRORS = {
    "400": "Bad request: malformed JSON or multipart, a missing field, or an input that is "
    "not a decodable PNG/JPEG image; `detail` names each bad field (e.g. `images[3]`).",
    "413": "Request body over the size limit, or more images than allowed in one request.",
    "415": "Unsupported content type.",
    "500": "Internal error while classifying.",
    "503": "Overloaded: the inference queue is full; retry after `Retry-After` seconds.",
}


def error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "title": ERROR_SCHEMA,
        "description": "Every error response of the inference endpoints.",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What is wrong, and where."},
            "detail": {
                "type": "array",
                "description": "One entry per invalid field.",
                "items": {
                    "type": "object",
                    "required": ["loc", "msg"],
                    "properties": {
                        "loc": {
                            "type": "string",
                            "description": "The field, e.g. `data` or `images[3]`; empty "
                            "for the body itself.",
                        },
                        "msg": {"type": "string"},
                    },
                },
            },
        },
    }


def image_schema(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "format": IMAGE_FORMAT,
        "minLength": 1,
        "description": description,
    }


def _error_responses() -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
    return {
        code: {"description": text, "content": {"application/json": {"schema": ref}}}
        for code, text in _ERRORS.items()
    }


def describe(
    doc: Mapping[str, Any],
    *,
    single: str,
    single_field: str,
    lists: Mapping[str, str],
    max_images: int,
) -> dict[str, Any]:
    """The generated document `doc`, rewritten to match the guard and the decoders.

    `single` is the one-image endpoint (its JSON field `single_field`); `lists` maps each
    list endpoint to its field. Paths missing from `doc` are left alone, so a document
    from another BentoML version degrades to BentoML's own description, never to an error.
    """
    out = copy.deepcopy(dict(doc))
    schemas = out.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = error_schema()
    schemas[IMAGE_SCHEMA] = image_schema(
        "A base64-encoded PNG or JPEG image. Any size and colour mode: it is converted to "
        "28x28 grayscale as in training."
    )
    image_ref = {"$ref": f"#/components/schemas/{IMAGE_SCHEMA}"}
    paths = out.get("paths") or {}

    op = (paths.get(single) or {}).get("post")
    if isinstance(op, dict):
        _errors_of(op)
        body = _json_body(op)
        if body is not None:
            props = body.setdefault("properties", {})
            props[single_field] = {**image_ref}
            body["required"] = [single_field]

    for path, field in lists.items():
        op = (paths.get(path) or {}).get("post")
        if not isinstance(op, dict):
            continue
        _errors_of(op)
        images = {
            "type": "array",
            "items": image_ref,
            "minItems": 1,
            "maxItems": max_images,
            "description": f"1 to {max_images} images, answered in order.",
        }
        obj = {
            "type": "object",
            "title": "Images",
            "required": [field],
            "properties": {field: images},
        }
        op["requestBody"] = {
            "required": True,
            "description": f'`{{"{field}": [...]}}`, a bare JSON list of images, or '
            f"multipart/form-data with each image as a file in `{field}`.",
            "content": {
                "application/json": {"schema": {"anyOf": [obj, images]}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,  # other fields are refused
                        "required": [field],
                        "properties": {
                            field: {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": max_images,
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                    },
                    "encoding": {field: {"contentType": "image/png, image/jpeg"}},
                },
            },
        }
    return out


def _errors_of(op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    responses.pop("404", None)
    responses.update(_error_responses())


def _json_body(op: dict[str, Any]) -> dict[str, Any] | None:
    """The inline JSON object schema of an operation's request body, if it has one."""
    try:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
    except (KeyError, TypeError):
        return None
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    op["requestBody"]["required"] = True
    return schema
