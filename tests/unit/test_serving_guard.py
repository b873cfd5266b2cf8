"""RequestGuard, driven as a real ASGI middleware around a recording inner app, and the
wire formats it uses (wire.py: error bodies, multipart)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from kubetrain_loadgen.payloads import multipart_body
from kubetrain_serving.guard import OVERLOADED, RequestGuard
from kubetrain_serving.wire import Reject, multipart_to_json, normalize_error, parse_multipart

LIMIT = 4096


class Inner:
    """Records what reached it and answers with a canned response."""

    def __init__(self, status: int = 200, body: bytes = b'{"ok": true}') -> None:
        self.status = status
        self.body = body
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.calls.append({"scope": scope, "body": b"".join(chunks)})
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", b"application/json"), (b"x-inner", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def call(
    inner: Inner,
    path: str = "/classify",
    body: bytes | list[bytes] = b"{}",
    content_type: str | None = "application/json",
    method: str = "POST",
    content_length: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    guard = RequestGuard(
        inner,
        endpoints=("/predict", "/classify"),
        max_body_bytes=LIMIT,
        max_images=3,
        list_field={"/classify": "images"},
    )
    chunks = body if isinstance(body, list) else [body]
    headers = []
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    if content_length:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # a real server would deliver http.disconnect much later
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(guard(scope, receive, send), 10))
    start = next(m for m in sent if m["type"] == "http.response.start")
    out_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    out_body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], out_headers, out_body


def test_passes_good_json_through_untouched() -> None:
    inner = Inner()
    status, headers, body = call(inner, "/predict", b'{"data": "abc"}')
    assert (status, body) == (200, b'{"ok": true}')
    assert headers["x-inner"] == "1"
    assert inner.calls[0]["body"] == b'{"data": "abc"}'


def test_other_paths_and_methods_are_not_touched() -> None:
    inner = Inner()
    big = b"x" * (LIMIT * 2)
    assert call(inner, "/metrics", big, content_type="text/plain")[0] == 200
    assert call(inner, "/classify", big, content_type="text/plain", method="GET")[0] == 200
    assert [c["body"] for c in inner.calls] == [big, big]


def test_declared_body_over_the_limit_is_413_without_reaching_the_app() -> None:
    inner = Inner()
    status, _, body = call(inner, "/predict", b"{" + b" " * LIMIT + b"}")
    assert status == 413
    assert json.loads(body) == {
        "error": f"request body of {LIMIT + 2} bytes exceeds the limit of {LIMIT} bytes"
    }
    assert inner.calls == []


def test_chunked_body_over_the_limit_is_cut_off() -> None:
    inner = Inner()
    chunks = [b"[" + b" " * 1000] * 5 + [b"]"]
    status, _, body = call(inner, "/classify", chunks, content_length=False)
    assert status == 413 and "exceeds the limit" in json.loads(body)["error"]
    assert inner.calls == []


@pytest.mark.parametrize(
    ("path", "ctype", "message"),
    [
        ("/predict", "text/plain", "unsupported content type 'text/plain': send application/json"),
        (
            "/classify",
            "application/x-www-form-urlencoded",
            "send application/json or multipart/form-data",
        ),
        (
            "/predict",
            "multipart/form-data; boundary=x",
            "/predict takes JSON, not multipart/form-data",
        ),
    ],
)
def test_unsupported_content_types_are_415(path: str, ctype: str, message: str) -> None:
    inner = Inner()
    status, _, body = call(inner, path, b"x", content_type=ctype)
    assert status == 415 and message in json.loads(body)["error"]
    assert inner.calls == []


def test_missing_content_type_means_json() -> None:
    inner = Inner()
    assert call(inner, "/predict", b'{"data": "a"}', content_type=None)[0] == 200


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_empty_body_is_400(body: bytes) -> None:
    inner = Inner()
    status, _, out = call(inner, "/predict", body)
    assert status == 400
    assert json.loads(out) == {"error": "empty request body: expected JSON with 'data'"}


def test_bare_json_list_is_wrapped_for_the_typed_input() -> None:
    inner = Inner()
    assert call(inner, "/classify", b' ["a", "b"]')[0] == 200
    sent = inner.calls[0]
    assert json.loads(sent["body"]) == {"images": ["a", "b"]}
    headers = dict(sent["scope"]["headers"])
    assert headers[b"content-length"] == str(len(sent["body"])).encode()


def test_multipart_files_become_base64_json_in_order() -> None:
    files = [b"\x89PNG first", b"second \x00\xff"]
    body, ctype = multipart_body(files)
    inner = Inner()
    assert call(inner, "/classify", body, content_type=ctype)[0] == 200
    sent = inner.calls[0]
    assert json.loads(sent["body"]) == {"images": [base64.b64encode(f).decode() for f in files]}
    assert dict(sent["scope"]["headers"])[b"content-type"] == b"application/json"


def test_multipart_errors_name_the_problem() -> None:
    body, ctype = multipart_body([b"a", b"b", b"c", b"d"])
    with pytest.raises(Reject) as too_many:
        multipart_to_json(body, ctype, field="images", max_items=3)
    assert too_many.value.status == 413 and "too many images" in too_many.value.message

    body, ctype = multipart_body([b"a"], field="file")
    with pytest.raises(Reject, match="unexpected multipart field 'file'"):
        multipart_to_json(body, ctype, field="images", max_items=3)

    text_part = b'--b\r\nContent-Disposition: form-data; name="images"\r\n\r\nhttp://10.0.0.1/x.png\r\n--b--\r\n'
    with pytest.raises(Reject, match="must be a file upload, not a text value"):
        multipart_to_json(text_part, "multipart/form-data; boundary=b", field="images", max_items=3)

    # ...but a part that declares an image type is a file, filename or not.
    typed = (
        b'--b\r\nContent-Disposition: form-data; name="images"\r\n'
        b"Content-Type: image/png; x=1\r\n\r\n\x89PNG\r\n--b--\r\n"
    )
    (part,) = parse_multipart(typed, "multipart/form-data; boundary=b")
    assert part.is_file and part.filename is None and part.content_type == "image/png"
    assert json.loads(
        multipart_to_json(typed, "multipart/form-data; boundary=b", field="images", max_items=3)
    ) == {"images": [base64.b64encode(b"\x89PNG").decode()]}

    with pytest.raises(Reject, match="no boundary"):
        parse_multipart(b"x", "multipart/form-data")
    with pytest.raises(Reject, match="malformed multipart body"):
        parse_multipart(b"garbage--b", "multipart/form-data; boundary=b")
    with pytest.raises(Reject, match="no parts"):
        parse_multipart(b"--b--\r\n", "multipart/form-data; boundary=b")


def test_multipart_rejections_through_the_middleware() -> None:
    inner = Inner()
    status, _, body = call(
        inner, "/classify", b"garbage", content_type="multipart/form-data; boundary=zz"
    )
    assert status == 400 and json.loads(body)["error"].startswith("malformed multipart body")
    assert inner.calls == []


def test_bentoml_validation_error_is_rewritten() -> None:
    detail = {
        "error": "1 validation error for Input",
        "detail": [
            {"type": "value_error", "loc": ["images", 2], "msg": "Value error, not an image"}
        ],
    }
    inner = Inner(status=400, body=json.dumps(detail).encode())
    status, headers, body = call(inner, "/classify", b'{"images": []}')
    assert status == 400
    assert json.loads(body) == {
        "error": "images[2]: not an image",
        "detail": [{"loc": "images[2]", "msg": "not an image"}],
    }
    assert headers["content-length"] == str(len(body)) and headers["x-inner"] == "1"


def test_wrapped_bentoml_exception_body_is_unwrapped() -> None:
    inner = Inner(status=400, body=b'[{"error": "data: malformed base64"}]')
    status, _, body = call(inner, "/predict", b'{"data": "x"}')
    assert (status, json.loads(body)) == (400, {"error": "data: malformed base64"})


def test_overload_is_503_with_retry_after() -> None:
    inner = Inner(status=503, body=b'{"error": "An unexpected error has occurred"}')
    status, headers, body = call(inner, "/predict", b'{"data": "x"}')
    assert (status, json.loads(body)) == (503, {"error": OVERLOADED})
    assert headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("status", "body", "want_status", "want_error"),
    [
        (
            400,
            {"detail": [{"type": "json_invalid", "loc": [], "msg": "Invalid JSON: EOF"}]},
            400,
            "malformed JSON: EOF",
        ),
        (
            400,
            {
                "detail": [
                    {
                        "type": "too_long",
                        "loc": ["images"],
                        "msg": "List should have at most 3 items",
                    }
                ]
            },
            413,
            "images: List should have at most 3 items",
        ),
        (
            400,
            {
                "detail": [
                    {
                        "type": "value_error",
                        "loc": ["images"],
                        "msg": "Value error, too many images: 9",
                    }
                ]
            },
            413,
            "images: too many images: 9",
        ),
        (
            400,
            {
                "detail": [
                    {"type": "missing", "loc": ["body", "data"], "msg": "Field required"},
                    {"type": "x", "loc": ["y"], "msg": "z"},
                ]
            },
            400,
            "data: Field required (and 1 more)",
        ),
        (404, {"foo": 1}, 404, '{"foo": 1}'),
    ],
)
def test_normalize_error(
    status: int, body: dict[str, Any], want_status: int, want_error: str
) -> None:
    got_status, doc = normalize_error(status, json.dumps(body).encode())
    assert (got_status, doc["error"]) == (want_status, want_error)


def test_normalize_error_on_non_json() -> None:
    assert normalize_error(405, b"Method Not Allowed") == (405, {"error": "Method Not Allowed"})
    assert normalize_error(400, b"") == (400, {"error": "HTTP 400"})


def test_only_refusals_count_as_rejections(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int, str | None]] = []
    monkeypatch.setattr(
        RequestGuard,
        "_observe",
        lambda self, ep, status, secs, reason: seen.append((ep, status, reason)),
    )
    call(Inner(500, b'[{"error": "boom"}]'), "/predict", b'{"data": "x"}')
    call(Inner(400, b'{"error": "data: not an image"}'), "/predict", b'{"data": "x"}')
    call(Inner(503, b"{}"), "/predict", b'{"data": "x"}')
    assert seen == [
        ("/predict", 500, None),
        ("/predict", 400, "not_an_image"),
        ("/predict", 503, "overloaded"),
    ]


def test_server_errors_keep_their_status_and_leave_in_the_one_error_shape() -> None:
    inner = Inner(status=500, body=b'{"error": "boom"}')
    assert call(inner, "/predict", b'{"data": "x"}')[:3:2] == (500, b'{"error": "boom"}')
    # BentoML wraps its exceptions' bodies in a one-element list; the OpenAPI document
    # promises an object with `error` for every status, 500 included.
    status, _, out = call(Inner(500, b'[{"error": "boom"}]'), "/predict", b'{"data": "x"}')
    assert status == 500 and json.loads(out) == {"error": "boom"}


def test_docs_json_is_rewritten_to_declare_the_guards_errors() -> None:
    doc = {
        "paths": {
            "/predict": {"post": {"responses": {"200": {}, "404": {}}, "requestBody": {}}},
            "/classify": {"post": {"responses": {"200": {}}}},
        }
    }
    inner = Inner(200, json.dumps(doc).encode())
    status, headers, out = call(inner, "/docs.json", b"", method="GET", content_type=None)
    assert status == 200 and headers["x-inner"] == "1"
    described = json.loads(out)
    predict = described["paths"]["/predict"]["post"]["responses"]
    assert "404" not in predict and {"400", "413", "415", "500", "503"} <= set(predict)
    classify = described["paths"]["/classify"]["post"]["requestBody"]["content"]
    assert classify["application/json"]["schema"]["anyOf"][1]["maxItems"] == 3


def test_docs_json_that_is_not_a_document_passes_through() -> None:
    status, _, out = call(Inner(503, b"starting"), "/docs.json", b"", method="GET")
    assert (status, out) == (503, b"starting")
