"""`RequestGuard`: the ASGI middleware in front of the inference endpoints.

BentoML parses requests itself; this layer adds what a public endpoint needs and
BentoML does not do, without touching BentoML internals:

- **Body limit.** A `Content-Length` over the limit is answered 413 before anything
  is read; a chunked body is counted while it is read and cut off at the limit. The
  (bounded) body is then replayed to BentoML, so memory per request is capped.
- **Content types.** Only JSON and multipart/form-data reach BentoML (415 otherwise);
  multipart is refused on endpoints that take no files. A missing content type means
  JSON, as curl users expect.
- **One typed input.** On a list endpoint (/classify) both accepted encodings are
  normalised into the JSON object BentoML's typed API declares, `{"images": [...]}`:
  a bare JSON list is wrapped, and a multipart body is parsed here (in memory, it is
  bounded) and its files re-encoded as base64 strings. BentoML's own multipart path is
  never used: it answers malformed forms and text fields with 500, writes every file
  to a temporary file, and fetches URLs given in file fields from the server.
- **One error shape.** BentoML answers validation errors as `{"error": "1 validation
  error for ...", "detail": [...]}` and its own exceptions as `[{"error": ...}]`;
  every error (4xx and 5xx) from these endpoints leaves here as `{"error": "<what and where>",
  "detail": [{"loc": "images[3]", "msg": ...}]}`. Too many images becomes 413; a 503
  (overload: batch queue full, BentoML's concurrency limit) says so and adds Retry-After.
- **Metrics.** Every request's latency and status, and every rejection's reason.
- **A truthful OpenAPI document.** `GET /docs.json` is BentoML's document rewritten by
  openapi.py to declare what this layer accepts and sends.

Only responses with status >= 400 are buffered (they are small); successful
responses stream through untouched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from kubetrain_serving.wire import Reject, multipart_to_json, normalize_error, rejection_reason

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = ("application/json", "text/json")
OVERLOADED = "the server is overloaded (inference queue full); retry later"
MULTIPART_TYPE = "multipart/form-data"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class RequestGuard:
    """ASGI middleware; BentoML instantiates it with the options given to
    `Service.add_asgi_middleware` (see service.py)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        endpoints: Iterable[str],
        max_body_bytes: int,
        max_images: int,
        list_field: Mapping[str, str] | None = None,
        single_field: str = "data",
        docs_path: str = "/docs.json",
    ) -> None:
        self.app = app
        self.endpoints = frozenset(endpoints)
        self.max_body_bytes = max_body_bytes
        self.max_images = max_images
        self.list_field = dict(list_field or {})
        self.single_field = single_field
        self.docs_path = docs_path
        self._metrics: Any = None

    def _observe(self, endpoint: str, status: int, seconds: float, reason: str | None) -> None:
        if self._metrics is None:
            from kubetrain_serving.metrics import get_metrics

            self._metrics = get_metrics()
        self._metrics.request(endpoint, status, seconds)
        if reason is not None:
            self._metrics.rejected(endpoint, reason)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == self.docs_path and scope.get("method") == "GET":
            await self._docs(scope, receive, send)
            return
        if scope["type"] != "http" or path not in self.endpoints or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "reason": None}
        try:
            body, scope = await self._read_body(scope, receive, path)
        except Reject as rej:
            state["status"], state["reason"] = rej.status, rej.reason
            await _send_json(send, rej.status, {"error": rej.message})
            self._observe(path, rej.status, time.perf_counter() - started, rej.reason)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # only http.disconnect is left to come

        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
                if state["status"] >= 400:
                    held["start"] = message  # rewrite the error body before sending
                    return
                await send(message)
                return
            if message["type"] == "http.response.body" and "start" in held:
                chunks.append(bytes(message.get("body", b"")))
                if message.get("more_body", False):
                    return
                extra: list[tuple[bytes, bytes]] = []
                if state["status"] == 503:
                    status, doc = 503, {"error": OVERLOADED}
                    extra.append((b"retry-after", b"1"))
                else:
                    status, doc = normalize_error(state["status"], b"".join(chunks))
                # A refusal (4xx, overload) counts as a rejection; a server error does not.
                refused = status < 500 or status == 503
                state["status"] = status
                state["reason"] = rejection_reason(status, doc) if refused else None
                headers = [
                    (k, v)
                    for k, v in held["start"].get("headers", [])
                    if k.lower() not in (b"content-length", b"content-type")
                ]
                await _send_json(send, status, doc, extra_headers=[*headers, *extra])
                held.clear()
                return
            await send(message)

        try:
            await self.app(scope, replay, guarded_send)
        finally:
            self._observe(path, state["status"], time.perf_counter() - started, state["reason"])

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """BentoML's OpenAPI document, rewritten by openapi.describe (it is small)."""
        from kubetrain_serving.openapi import describe

        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                held["start"] = message
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))

        await self.app(scope, receive, capture)
        start = held.get("start") or {"status": 500, "headers": []}
        body = b"".join(chunks)
        try:
            doc = json.loads(body) if int(start["status"]) == 200 else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):  # not a document: pass BentoML's answer through
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        single = sorted(self.endpoints - set(self.list_field))
        described = describe(
            doc,
            single=single[0] if single else "",
            single_field=self.single_field,
            lists=self.list_field,
            max_images=self.max_images,
        )
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        await _send_json(send, 200, described, extra_headers=headers)

    async def _read_body(self, scope: Scope, receive: Receive, path: str) -> tuple[bytes, Scope]:
        """Check headers, read the body up to the limit, normalise list requests to JSON.

        Returns the body to replay and the scope to pass on (its headers rewritten when
        the body was rewritten).
        """
        raw_type = _header(scope, b"content-type") or "application/json"
        media_type = raw_type.split(";", 1)[0].strip().lower()
        if media_type == MULTIPART_TYPE:
            if path not in self.list_field:
                raise Reject(415, f"{path} takes JSON, not {media_type}", "unsupported_media_type")
        elif media_type not in JSON_TYPES:
            allowed = "application/json" + (
                " or multipart/form-data" if path in self.list_field else ""
            )
            raise Reject(
                415,
                f"unsupported content type {media_type!r}: send {allowed}",
                "unsupported_media_type",
            )
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise Reject(400, f"invalid Content-Length {length!r}", "bad_request") from None
            if declared > self.max_body_bytes:
                raise Reject(
                    413,
                    f"request body of {declared} bytes exceeds the limit of {self.max_body_bytes} bytes",
                    "too_large",
                )
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Reject(400, "client disconnected before the body was complete", "bad_request")
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_body_bytes:
                raise Reject(
                    413,
                    f"request body exceeds the limit of {self.max_body_bytes} bytes",
                    "too_large",
                )
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        if not body.strip():
            expected = self.list_field.get(path, "data")
            raise Reject(400, f"empty request body: expected JSON with {expected!r}", "empty")
        field = self.list_field.get(path)
        if field is None:
            return body, scope
        if media_type == MULTIPART_TYPE:
            body = multipart_to_json(body, raw_type, field=field, max_items=self.max_images)
        elif body.lstrip()[:1] == b"[":
            body = b'{"' + field.encode() + b'":' + body + b"}"
        else:
            return body, scope
        headers = [
            (k, v)
            for k, v in scope.get("headers", ())
            if k.lower() not in (b"content-type", b"content-length")
        ]
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        return body, {**scope, "headers": headers}


async def _send_json(
    send: Send,
    status: int,
    doc: Mapping[str, Any],
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    payload = json.dumps(doc).encode()
    headers = [
        *extra_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
