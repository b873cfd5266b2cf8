"""kube.Kube, the operator's one API client: what each generic verb sends, and how an
apiserver answer becomes a dict, None, False or a KubeError. The ApiClient is a recording
fake; serialization and auth are the official client's and not under test."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import pytest
from kubernetes import client as k8s_client
from kubetrain_operator.kube import APPLY_CONTENT_TYPE, Kube, KubeError


@dataclass
class Response:
    status: int
    body: Any = None
    reason: str = ""

    def read(self) -> bytes:
        if self.body is None:
            return b""
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


class FakeApi:
    """param_serialize/call_api of an ApiClient: requests recorded, answers scripted."""

    def __init__(self, *answers: Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def param_serialize(self, method: str, path: str, **kw: Any) -> tuple[Any, ...]:
        self.requests.append({"method": method, "path": path, **kw})
        return method, path, kw["header_params"], kw["body"], None

    def call_api(self, method: str, url: str, **kw: Any) -> Response:
        self.requests[-1]["timeout"] = kw["_request_timeout"]
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def kube(*answers: Response | Exception, timeout: float = 30.0) -> tuple[Kube, FakeApi]:
    api = FakeApi(*answers)
    return Kube(cast(k8s_client.ApiClient, api), timeout=timeout), api


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "code": code, "reason": reason, "message": message}


def test_apply_is_a_forced_server_side_apply_of_the_whole_object() -> None:
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}
    k, api = kube(Response(200, {**obj, "spec": {}}))
    assert k.apply("/api/v1/namespaces/n/services/s", obj, "kubetrain-operator")["spec"] == {}
    [req] = api.requests
    assert (req["method"], req["path"], req["body"]) == (
        "PATCH",
        "/api/v1/namespaces/n/services/s",
        obj,
    )
    assert sorted(req["query_params"]) == [
        ("fieldManager", "kubetrain-operator"),
        ("force", "true"),
    ]
    assert req["header_params"]["Content-Type"] == APPLY_CONTENT_TYPE


def test_errors_carry_status_message_and_body() -> None:
    doc = status_body(422, "Invalid", "spec.serving.replicas: Invalid value: 0: should be >= 1")
    k, _ = kube(Response(422, doc, "Unprocessable Entity"))
    with pytest.raises(KubeError) as err:
        k.apply("/p", {"kind": "X"}, "m")
    assert (err.value.status, err.value.reason) == (422, "Invalid")
    assert "spec.serving.replicas" in err.value.message
    assert json.loads(err.value.body) == doc
    k, _ = kube(Response(409, status_body(409, "Conflict", "modified")))
    with pytest.raises(KubeError) as err:
        k.apply("/p", {"kind": "X"}, "m")
    assert err.value.conflict
    k, _ = kube(Response(502, b"<html>bad gateway</html>", "Bad Gateway"))
    with pytest.raises(KubeError) as err:
        k.get("/p")
    assert (err.value.status, err.value.message) == (502, "<html>bad gateway</html>")
    k, _ = kube(ConnectionResetError("reset by peer"))
    with pytest.raises(KubeError) as err:
        k.get("/p")
    assert err.value.status == 0 and "reset by peer" in str(err.value)


def test_get_list_and_delete_treat_absence_as_an_answer() -> None:
    k, api = kube(
        Response(404, status_body(404, "NotFound", "gone")),
        Response(200, {"items": [{"metadata": {"name": "a"}}]}),
        Response(200, {"status": "Success"}),
        Response(404, status_body(404, "NotFound", "gone")),
        Response(403, status_body(403, "Forbidden", "no")),
    )
    assert k.get("/apis/apps/v1/namespaces/n/deployments/d") is None
    assert k.list_items("/apis/apps/v1/namespaces/n/replicasets", "a=b,c=d") == [
        {"metadata": {"name": "a"}}
    ]
    assert api.requests[1]["query_params"] == [("labelSelector", "a=b,c=d")]
    assert k.delete("/x") is True
    assert api.requests[2]["body"] == {"propagationPolicy": "Background"}
    assert k.delete("/x") is False
    with pytest.raises(KubeError):
        k.delete("/x")


def test_post_event_builds_one_core_v1_event_and_never_raises() -> None:
    involved = {
        "apiVersion": "kubetrain.dev/v1alpha1",
        "kind": "DatasetWatch",
        "name": "digits",
        "namespace": "ml",
        "uid": "u1",
    }
    k, api = kube(Response(201, {}), Response(500, status_body(500, "InternalError", "etcd")))
    assert k.post_event(
        involved, "Warning", "RolledBack", "x" * 2000, component="kt", now="2026-01-02T03:04:05Z"
    )
    [req] = api.requests
    assert (req["method"], req["path"]) == ("POST", "/api/v1/namespaces/ml/events")
    body = req["body"]
    assert body["metadata"] == {"generateName": "digits.", "namespace": "ml"}
    assert body["involvedObject"] == involved
    assert (body["type"], body["reason"], len(body["message"])) == ("Warning", "RolledBack", 1024)
    assert body["source"]["component"] == "kt" and body["source"]["host"]
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-01-02T03:04:05Z"
    assert body["count"] == 1
    assert k.post_event(involved, "Normal", "R", "m", component="kt") is False


def test_with_timeout_shares_the_client() -> None:
    k, api = kube(Response(200, {}), timeout=30.0)
    short = k.with_timeout(4.5)
    assert short.api is k.api and k.timeout == 30.0
    short.get("/p")
    assert api.requests[0]["timeout"] == 4.5
