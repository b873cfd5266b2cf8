"""The MinIO webhook receiver: routing by bucket/prefix, auth, poison events (loopback only)."""

from __future__ import annotations

import json
import queue
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubetrain_operator.webhook import WebhookRouter, WebhookServer


def record(
    bucket: str, key: str, name: str = "s3:ObjectCreated:Put", etag: str = "e1"
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key}
    if name.startswith("s3:ObjectCreated"):
        obj["eTag"] = etag
    return {"eventName": name, "s3": {"bucket": {"name": bucket}, "object": obj}}


def test_router_routes_by_bucket_and_prefix() -> None:
    router = WebhookRouter()
    a: queue.SimpleQueue[Any] = queue.SimpleQueue()
    b: queue.SimpleQueue[Any] = queue.SimpleQueue()
    route_a = router.register("data", "train/", a)
    router.register("data", "", b)
    doc = {
        "Records": [
            record("data", "train/7/x%20y.png"),
            record("data", "test/1.png"),
            record("other", "train/1.png"),
            record("data", "train/7/z.png", "s3:ObjectRemoved:Delete"),
        ]
    }
    assert router.dispatch(doc) == 5
    got_a = [a.get_nowait() for _ in range(a.qsize())]
    assert [(c.kind, c.key) for c in got_a] == [
        ("put", "train/7/x y.png"),
        ("delete", "train/7/z.png"),
    ]
    assert b.qsize() == 3
    router.unregister(route_a)
    assert router.dispatch({"Records": [record("data", "train/1.png")]}) == 1


@pytest.fixture
def server() -> Any:
    router = WebhookRouter()
    srv = WebhookServer(
        router, host="127.0.0.1", port=0, path="/minio/events", token="s3cret"
    ).start()
    yield router, srv
    srv.stop()


def post(port: int, body: bytes, token: str | None) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/minio/events", data=body, method="POST")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_server_auth_and_poison_events(server: Any) -> None:
    router, srv = server
    sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
    router.register("data", "", sink)
    body = json.dumps(
        {
            "EventName": "s3:ObjectCreated:Put",
            "Key": "data/1/a.png",
            "Records": [record("data", "1/a.png")],
        }
    ).encode()
    assert post(srv.port, body, None) == 401
    assert post(srv.port, body, "wrong") == 401
    assert sink.qsize() == 0
    assert post(srv.port, body, "s3cret") == 200
    assert sink.get_nowait().key == "1/a.png"
    # Unreadable events are dropped with 2xx so that MinIO's delivery never wedges on them.
    assert post(srv.port, b"{not json", "s3cret") == 200
    assert post(srv.port, b"[1, 2]", "s3cret") == 200
    assert sink.qsize() == 0
