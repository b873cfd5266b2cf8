"""The local control plane is real: CRDs, status subresources, the Job controller, RBAC."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.support.wait import wait_for

pytestmark = pytest.mark.platform


def test_crd_established_and_status_subresource(kube: client.ApiClient, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(kube)
    group = f"g{uuid.uuid4().hex[:6]}.platform.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            got = ext.read_custom_resource_definition(f"widgets.{group}")
            return any(
                c.type == "Established" and c.status == "True" for c in got.status.conditions or []
            )

        wait_for(established, what="CRD Established")
        co = client.CustomObjectsApi(kube)
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        wait_for(lambda: _try_create(co, group, namespace, body), what="CR create")
        co.patch_namespaced_custom_object_status(
            group, "v1", namespace, "widgets", "w1", {"status": {"phase": "Ready"}}
        )
        got = co.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")
        assert got["status"] == {"phase": "Ready"}
        # The status subresource ignores spec changes sent to it, and the main resource ignores status.
        co.patch_namespaced_custom_object(
            group, "v1", namespace, "widgets", "w1", {"status": {"phase": "X"}}
        )
        assert (
            co.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")["status"][
                "phase"
            ]
            == "Ready"
        )
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def _try_create(co: client.CustomObjectsApi, group: str, ns: str, body: dict) -> bool:  # type: ignore[type-arg]
    try:
        co.create_namespaced_custom_object(group, "v1", ns, "widgets", body)
        return True
    except client.ApiException as exc:
        if exc.status == 404:  # discovery not caught up yet
            return False
        raise


def test_job_controller_creates_pending_pod(kube: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(kube)
    core = client.CoreV1Api(kube)
    # ServiceAccount admission needs the namespace's default SA, made by the SA controller.
    wait_for(lambda: _sa_exists(core, namespace), what="default ServiceAccount")
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="c", image="busybox", command=["true"])],
                )
            ),
        ),
    )
    batch.create_namespaced_job(namespace, job)
    pods = wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector="job-name=hello").items,
        what="the Job controller's pod",
    )
    assert len(pods) == 1
    pod = pods[0]
    assert pod.metadata.owner_references[0].kind == "Job"
    # busybox is in no local registry and pods have no route out, so the pod stays Pending.
    assert pod.status.phase == "Pending"
    # The Job controller counts the pod in a later status write than the one creating it.
    wait_for(
        lambda: batch.read_namespaced_job("hello", namespace).status.active == 1,
        what="the Job's status.active == 1",
    )


def _sa_exists(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespaced_service_account("default", ns)
        return True
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def test_namespaced_role_token_is_confined(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    rbac = client.RbacAuthorizationV1Api(kube)
    other = f"{namespace}-other"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="bot"))
        )
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="jobs"),
                rules=[
                    client.V1PolicyRule(
                        api_groups=["batch"], resources=["jobs"], verbs=["create", "get"]
                    )
                ],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="jobs"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="jobs"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="bot", namespace=namespace)
                ],
            ),
        )
        tr = core.create_namespaced_service_account_token(
            "bot",
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
            ),
        )
        cfg = client.Configuration()
        cfg.host = kube.configuration.host
        cfg.ssl_ca_cert = kube.configuration.ssl_ca_cert
        cfg.api_key = {"authorization": "Bearer " + tr.status.token}
        with client.ApiClient(cfg) as bot_api:
            bot = client.BatchV1Api(bot_api)
            job = client.V1Job(
                metadata=client.V1ObjectMeta(name="allowed"),
                spec=client.V1JobSpec(
                    template=client.V1PodTemplateSpec(
                        spec=client.V1PodSpec(
                            restart_policy="Never",
                            containers=[client.V1Container(name="c", image="x", command=["true"])],
                        )
                    )
                ),
            )
            # The token is valid (authenticated) and the Role applies in its own namespace...
            wait_for(
                lambda: _try_job(bot, namespace, job) == 201,
                what="bot creates a Job in its namespace",
            )
            # ...and nowhere else.
            assert _try_job(bot, other, job) == 403
            with pytest.raises(client.ApiException) as forbidden:
                client.CoreV1Api(bot_api).list_namespaced_secret(namespace)
            assert forbidden.value.status == 403
    finally:
        core.delete_namespace(other)


def _try_job(api: client.BatchV1Api, ns: str, job: client.V1Job) -> int:
    try:
        api.create_namespaced_job(ns, job)
        return 201
    except client.ApiException as exc:
        if exc.status == 409:
            return 201
        return int(exc.status)


def test_kubectl_reports_true_server_version(platform) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess

    out = subprocess.run(
        [platform.tool("kubectl"), "--kubeconfig", platform.kubeconfig, "version", "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(out)
    server = doc["serverVersion"]["gitVersion"]
    client_v = doc["clientVersion"]["gitVersion"]
    assert server.startswith("v1.") and not server.startswith("v0.0.0"), server
    assert int(doc["serverVersion"]["minor"]) >= 34
    assert client_v == server
