"""A thin, typed JSON client: the operator's one way to reach the Kubernetes API.

kopf handles the DatasetWatch watch stream, finalizers and peering. Everything the operator
calls itself (status patches from the long-running worker, Jobs, pods, the credentials
Secret, the serving rollout's server-side applies and Events) goes through this wrapper over
the official client's authenticated `ApiClient`: plain dicts in and out (the same shape as
kopf bodies and the YAML people read), no generated models, one exception type
(`KubeError`) carrying the HTTP status.

Two layers: generic REST verbs on an API path (`get`, `list`, `apply`, `delete`,
`post_event`), used by the rollout with the objects it built, and named calls for the
worker (`get_watch`, `create_job`, ...).

Blocking calls: the watch workers run in kopf's thread pool (sync daemons).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from kubetrain_operator.constants import GROUP, PLURAL, VERSION, rfc3339

log = logging.getLogger("kubetrain.operator.kube")

#: Server-side apply; JSON is YAML, so the body is sent as JSON.
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


class KubeError(RuntimeError):
    """A failed API call; `status` is the HTTP code (0: no response).

    `message` is the apiserver's Status message (it names the fields at fault), `body` the
    raw response text.
    """

    def __init__(self, status: int, reason: str, message: str, *, body: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class Kube:
    def __init__(self, api: k8s_client.ApiClient, *, timeout: float = 30.0) -> None:
        self.api = api
        self.timeout = timeout

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster service account if there is one, else KUBECONFIG / ~/.kube/config."""
        configuration = k8s_client.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
        return cls(k8s_client.ApiClient(configuration))

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            m, url, hdrs, payload, _ = self.api.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()) or None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(
                m, url, header_params=hdrs, body=payload, _request_timeout=self.timeout
            )
            data = resp.read()
        except ApiException as exc:
            raise KubeError(exc.status or 0, str(exc.reason or "error"), "") from exc
        except Exception as exc:  # urllib3 connection errors and timeouts
            raise KubeError(0, type(exc).__name__, str(exc)) from exc
        if not 200 <= resp.status < 300:
            message = ""
            reason = str(resp.reason or "")
            text = (data or b"").decode(errors="replace")
            try:
                doc = json.loads(data)
                message = str(doc.get("message") or "")
                reason = str(doc.get("reason") or reason)
            except (ValueError, AttributeError):
                message = text[:300]
            raise KubeError(resp.status, reason, message, body=text)
        return json.loads(data) if data else {}

    def with_timeout(self, timeout: float) -> Kube:
        """The same client (connection pool, credentials) with another per-request timeout."""
        return Kube(self.api, timeout=timeout)

    # -- generic verbs on an API path ---------------------------------------------------
    def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when there is none (404)."""
        try:
            return self.request("GET", path)
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list_items(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        """The items of the collection at `path` that match `label_selector`."""
        doc = self.request("GET", path, query={"labelSelector": label_selector})
        return list(doc.get("items") or [])

    def apply(self, path: str, obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        """Server-side apply of the whole `obj` (create or update; force: we own its fields).

        Fields the manager set before and `obj` leaves out are removed. A
        `metadata.resourceVersion` in `obj` makes the write conditional (409 when stale).
        """
        return self.request(
            "PATCH",
            path,
            body=obj,
            query={"fieldManager": field_manager, "force": "true"},
            content_type=APPLY_CONTENT_TYPE,
        )

    def delete(self, path: str) -> bool:
        """Delete in the background; False when there was nothing to delete."""
        try:
            self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.not_found:
                return False
            raise
        return True

    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        now: str | None = None,
    ) -> bool:
        """Post a core/v1 Event about `involved` (apiVersion, kind, name, namespace, uid).

        Best effort: a failure is logged and False returned, never raised, since an Event
        is not worth failing the action it reports.
        """
        namespace, name = str(involved.get("namespace") or ""), str(involved.get("name") or "")
        stamp = now or rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {
                k: involved[k]
                for k in ("apiVersion", "kind", "name", "namespace", "uid")
                if k in involved
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component, "host": socket.gethostname()},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{quote(namespace)}/events", body=body)
        except Exception as exc:  # KubeError, or a 2xx whose body is not JSON
            log.warning("could not post Event %s for %s/%s: %s", reason, namespace, name, exc)
            return False
        return True

    # -- DatasetWatch -------------------------------------------------------------------
    def _watch_path(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}"

    def get_watch(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", self._watch_path(namespace, name))

    def patch_watch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch `status` (None values delete fields) through the status subresource."""
        return self.request(
            "PATCH",
            self._watch_path(namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    # -- core/batch ---------------------------------------------------------------------
    def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/namespaces/{quote(namespace)}/secrets/{quote(name)}")

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs", body=job)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request(
                "GET", f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs/{quote(name)}"
            )
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        doc = self.request(
            "GET",
            f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs",
            query={"labelSelector": selector},
        )
        return list(doc.get("items") or [])

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.request(
                "DELETE",
                f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs/{quote(name)}",
                body={"propagationPolicy": "Background"},
            )
        except KubeError as exc:
            if not exc.not_found:
                raise

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        doc = self.request(
            "GET", f"/api/v1/namespaces/{quote(namespace)}/pods", query={"labelSelector": selector}
        )
        return list(doc.get("items") or [])


def selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
