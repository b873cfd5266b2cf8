"""The wire formats in front of the inference endpoints: error bodies and multipart.

Pure functions over bytes, for `RequestGuard` (guard.py), which owns the ASGI side:

- `Reject`: a refusal with its status, client message and metric reason;
- `normalize_error`: any of BentoML's 4xx/5xx bodies -> the one shape `{"error": str,
  "detail": [{"loc", "msg"}]}` that the OpenAPI document (openapi.py) declares, and
  `rejection_reason`, the bounded metric label of a refusal;
- `parse_multipart` / `multipart_to_json`: a bounded, in-memory multipart/form-data
  parser that turns image files into the JSON body BentoML's typed API declares.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple


class Reject(Exception):
    """A request refused by the guard: status, client message and metric reason."""

    def __init__(self, status: int, message: str, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


def _format_loc(loc: Iterable[Any]) -> str:
    """pydantic's ("images", 3) -> "images[3]"; ("body",) prefixes are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("body", "root"):
            out += f".{part}" if out else str(part)
    return out


def _clean_msg(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def normalize_error(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """Turn any of BentoML's error bodies (4xx and 5xx) into `{"error": str, "detail": [...]}`.

    Returns the (possibly changed) status and the new body. Pure, for unit tests.
    """
    try:
        doc: Any = json.loads(body) if body else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, list) and len(doc) == 1 and isinstance(doc[0], dict):
        doc = doc[0]  # BentoMLException bodies come wrapped in a one-element list
    if not isinstance(doc, dict):
        text = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
        return status, {"error": text[:500]}
    detail = doc.get("detail")
    if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
        items = [
            {"loc": _format_loc(d.get("loc", ())), "msg": _clean_msg(str(d.get("msg", "")))}
            for d in detail
        ]
        first = items[0]
        error = f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
        if len(items) > 1:
            error += f" (and {len(items) - 1} more)"
        if detail[0].get("type") == "json_invalid":
            error = "malformed JSON: " + first["msg"].removeprefix("Invalid JSON: ")
        if detail[0].get("type") == "too_long" or first["msg"].startswith("too many images"):
            status = 413
        return status, {"error": error, "detail": items}
    if "error" in doc:
        return status, {"error": str(doc["error"])}
    return status, {"error": json.dumps(doc)[:500]}


def rejection_reason(status: int, body: Mapping[str, Any]) -> str:
    """A short, bounded label for the rejection metric."""
    if status == 413:
        return "too_many_images" if "too many images" in str(body.get("error", "")) else "too_large"
    if status == 503:
        return "overloaded"
    if status == 415:
        return "unsupported_media_type"
    error = str(body.get("error", ""))
    for key, reason in (
        ("malformed JSON", "malformed_json"),
        ("malformed base64", "malformed_base64"),
        ("malformed multipart", "malformed_multipart"),
        ("empty", "empty"),
        ("Field required", "missing_field"),
        ("not an image", "not_an_image"),
        ("corrupt image", "not_an_image"),
    ):
        if key in error:
            return reason
    return "bad_request"


class Part(NamedTuple):
    """One part of a multipart/form-data body."""

    name: str
    filename: str | None
    content_type: str | None
    """The part's own Content-Type, lower-cased, without parameters; None if absent."""
    content: bytes

    @property
    def is_file(self) -> bool:
        """A file upload: it has a filename, or it declares a binary type. Some clients
        (and RFC 7578's own examples of generated forms) send files without a filename;
        a part with neither is a text field."""
        return self.filename is not None or (
            self.content_type is not None
            and self.content_type.startswith(("image/", "application/octet-stream"))
        )


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/form-data body into its parts, in order.

    In memory (the caller bounds the body). Raises Reject(400) naming the problem.
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise Reject(
            400, "malformed multipart body: the Content-Type has no boundary", "malformed_multipart"
        )
    parts: list[Part] = []
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.clear()
        current.update(headers={}, name=b"", value=b"", data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_header_end() -> None:
        current["headers"][current["name"].lower()] = current["value"]
        current["name"], current["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"].append(data[start:end])

    def on_part_end() -> None:
        disposition = current["headers"].get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        name = options.get(b"name")
        if name is None:
            raise Reject(
                400,
                f"malformed multipart body: part {len(parts)} has no Content-Disposition name",
                "malformed_multipart",
            )
        filename = options.get(b"filename")
        part_type = current["headers"].get(b"content-type")
        parts.append(
            Part(
                name.decode("utf-8", "replace"),
                filename.decode("utf-8", "replace") if filename is not None else None,
                part_type.decode("latin-1").split(";", 1)[0].strip().lower() if part_type else None,
                b"".join(current["data"]),
            )
        )

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise Reject(400, f"malformed multipart body: {exc}", "malformed_multipart") from None
    if not parts:
        raise Reject(400, "malformed multipart body: no parts found", "malformed_multipart")
    return parts


def multipart_to_json(body: bytes, content_type: str, *, field: str, max_items: int) -> bytes:
    """A multipart body with files in `field` -> `{"<field>": ["<base64>", ...]}` (in order).

    Every part must be a file upload in `field`; anything else is refused with a
    message saying what to send instead.
    """
    encoded: list[str] = []
    for index, part in enumerate(parse_multipart(body, content_type)):
        if part.name != field:
            raise Reject(
                400,
                f"unexpected multipart field {part.name!r} (part {index}): send images as files in {field!r}",
                "bad_request",
            )
        if not part.is_file:
            raise Reject(
                400,
                f"{field}[{index}]: multipart field {field!r} must be a file upload, not a text value",
                "bad_request",
            )
        if len(encoded) >= max_items:
            raise Reject(
                413, f"too many images: more than {max_items} in one request", "too_many_images"
            )
        encoded.append(base64.b64encode(part.content).decode("ascii"))
    return json.dumps({field: encoded}).encode()
