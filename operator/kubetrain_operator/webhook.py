"""MinIO webhook receiver: `POST /minio/events` -> the queues of the watches that care.

MinIO's webhook notification target (`MINIO_NOTIFY_WEBHOOK_ENABLE_KUBETRAIN=on`,
`..._ENDPOINT_KUBETRAIN=http://<operator>:8081/minio/events`, optional `..._AUTH_TOKEN_...`)
posts one JSON document per event: `{"EventName": ..., "Key": "<bucket>/<key>", "Records":
[...]}` with URL-escaped keys in the records. One receiver serves every watch; each watch
worker registers (bucket, prefix, queue) and gets the changes under its prefix.

Delivery semantics we rely on: configure the target **without** `QUEUE_DIR`: MinIO then
posts each event as it happens (measured here: p50 5 ms, p95 22 ms from PUT to POST), while
a queue dir makes MinIO replay its store only every 3 s. Without the queue an event is lost
when the POST fails (operator down or restarting); that is fine because counts are a diff
against the baseline and a full listing runs at every session start, after a source outage
and every resyncInterval. The handler therefore always answers 2xx for anything it could
read, so a malformed event can never wedge MinIO's delivery.

Threaded stdlib HTTP server (HTTP/1.1 keep-alive, MinIO reuses its connection); handlers only
parse and enqueue, O(records), no I/O.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubetrain_operator.notifications import parse_record

log = logging.getLogger("kubetrain.operator.webhook")
MAX_BODY = 8 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class Route:
    bucket: str
    prefix: str
    sink: queue.SimpleQueue[Any]


class WebhookRouter:
    """Routes parsed changes to registered (bucket, prefix) sinks; thread-safe."""

    def __init__(self) -> None:
        self._routes: dict[str, list[Route]] = {}
        self._lock = threading.Lock()
        self.received = 0

    def register(self, bucket: str, prefix: str, sink: queue.SimpleQueue[Any]) -> Route:
        route = Route(bucket, prefix, sink)
        with self._lock:
            self._routes.setdefault(bucket, []).append(route)
        return route

    def unregister(self, route: Route) -> None:
        with self._lock:
            routes = self._routes.get(route.bucket, [])
            if route in routes:
                routes.remove(route)
            if not routes:
                self._routes.pop(route.bucket, None)

    def dispatch(self, doc: Mapping[str, Any]) -> int:
        """Enqueue the changes of one webhook document; returns how many were routed."""
        records = doc.get("Records") or []
        routed = 0
        with self._lock:
            routes = {b: list(r) for b, r in self._routes.items()}
        for rec in records if isinstance(records, list) else []:
            if not isinstance(rec, Mapping):
                continue
            bucket = ((rec.get("s3") or {}).get("bucket") or {}).get("name")
            targets = routes.get(bucket or "")
            if not targets:
                continue
            change = parse_record(rec, escaped=True)
            if change is None:
                continue
            for route in targets:
                if change.key.startswith(route.prefix):
                    route.sink.put(change)
                    routed += 1
        self.received += 1
        return routed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _reply(self, code: int, text: str = "") -> None:
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != self.server.path:
            self._reply(404, "not found\n")
            return
        token = self.server.token
        if token:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                self._reply(401, "bad or missing bearer token\n")
                return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._reply(413, "body too large or without Content-Length\n")
            self.close_connection = True
            return
        body = self.rfile.read(length)
        try:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            # Answer 2xx anyway: a poison event must not block MinIO; resync repairs.
            log.warning("webhook: dropping an unreadable event (%s): %r", exc, body[:200])
            self._reply(200, "ignored\n")
            return
        self.server.router.dispatch(doc)
        self._reply(200)

    def do_GET(self) -> None:
        self._reply(
            200 if self.path == "/healthz" else 404, "ok\n" if self.path == "/healthz" else ""
        )

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook %s: " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], router: WebhookRouter, path: str, token: str) -> None:
        super().__init__(addr, _Handler)
        self.router = router
        self.path = path
        self.token = token


class WebhookServer:
    """The receiver, serving in a daemon thread."""

    def __init__(
        self, router: WebhookRouter, *, host: str, port: int, path: str, token: str = ""
    ) -> None:
        self.router = router
        self._server = _Server((host, port), router, path, token)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kubetrain-webhook", daemon=True
        )

    def start(self) -> WebhookServer:
        self._thread.start()
        log.info("MinIO webhook receiver on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
