"""The desired serving objects of one watch: Deployment, Service, Ingress. Pure.

When a training run's result says `promoted`, the operator serves the new Bento through
three objects per DatasetWatch, all named `<watch>-serving` and owned by the watch:

* a **Deployment** running the trainer image with `command: ["kubetrain-serve"]` and
  `--bento <s3 uri>`; the URI is also in env `KUBETRAIN_BENTO_URI` and in pod-template
  annotations, so a new Bento changes the pod template and the Deployment controller rolls
  it out. `RollingUpdate` with `maxUnavailable: 0, maxSurge: 1` means the pods of the old
  model keep serving until pods of the new one are Ready: the previous model serves
  throughout, even when the new one never comes up;
* a ClusterIP **Service** (port 80 -> the container's named port `http`);
* an **Ingress** (networking.k8s.io/v1) when `spec.serving.ingress` is set.

Each builder is a function of (target, state, settings) only, so the same inputs give the
same object byte for byte: that is what makes a rollback reproduce the previous pod
template exactly, and what `desired_objects`' spec hash compares.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubetrain_operator.serving_rollout.spec import (
    ServingTarget,
    object_labels,
    selector_labels,
    short_hash,
)
from kubetrain_operator.serving_rollout.state import (
    ANN_BENTO_URI,
    ANN_MODEL_VERSION,
    ANN_SPEC_HASH,
    Release,
    RolloutState,
)
from kubetrain_operator.settings import RolloutSettings

CONTAINER_NAME = "serving"
SERVE_COMMAND = ["kubetrain-serve"]
SERVICE_PORT = 80


def _container(
    target: ServingTarget, release: Release, settings: RolloutSettings
) -> dict[str, Any]:
    serving = target.serving
    secret = target.credentials_secret

    def from_secret(key: str) -> dict[str, Any]:
        return {"valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    env: list[dict[str, Any]] = [
        {"name": "KUBETRAIN_BENTO_URI", "value": release.bento_uri},
        {"name": "KUBETRAIN_MODEL_NAME", "value": release.model_name},
        {"name": "KUBETRAIN_MODEL_VERSION", "value": release.model_version},
        {"name": "KUBETRAIN_WATCH", "value": target.watch.watch_id},
        # The contract's names (kubetrain-serve maps them for fsspec) ...
        {"name": "MINIO_ENDPOINT", "value": target.endpoint},
        {"name": "MINIO_ACCESS_KEY", **from_secret("accessKey")},
        {"name": "MINIO_SECRET_KEY", **from_secret("secretKey")},
        # ... and the ones s3fs/botocore read directly, so `bentoml import s3://...` works
        # whichever layer resolves the endpoint.
        {"name": "AWS_ENDPOINT_URL_S3", "value": target.endpoint},
        {"name": "AWS_ACCESS_KEY_ID", **from_secret("accessKey")},
        {"name": "AWS_SECRET_ACCESS_KEY", **from_secret("secretKey")},
        {"name": "AWS_DEFAULT_REGION", "value": settings.s3_region},
        {"name": "BENTOML_HOME", "value": settings.bentoml_home},
        {"name": "BENTOML_DO_NOT_TRACK", "value": "true"},
        # Python and libraries write caches under $HOME; the root filesystem is read-only.
        {"name": "HOME", "value": "/tmp"},
        # TensorFlow sizes thread pools from the node's cores; tell it the pod's limit.
        {
            "name": "KUBETRAIN_CPU_LIMIT",
            "valueFrom": {
                "resourceFieldRef": {
                    "containerName": CONTAINER_NAME,
                    "resource": "limits.cpu",
                    "divisor": "1",
                }
            },
        },
    ]
    http_get = {"port": "http", "scheme": "HTTP"}
    return {
        "name": CONTAINER_NAME,
        "image": target.image,
        "imagePullPolicy": serving.image_pull_policy,
        "command": list(SERVE_COMMAND),
        # kubetrain-serve listens on 0.0.0.0 (its default): every pod has its own network
        # namespace, so replicas never share a port.
        "args": ["--bento", release.bento_uri, "--port", str(serving.port)],
        "ports": [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}],
        "env": env,
        "resources": dict(serving.resources)
        or {k: dict(v) for k, v in settings.default_resources.items()},
        # Ready only once the model is loaded (BentoML's /readyz).
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **http_get},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", **http_get},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        # Importing the Bento from S3 and loading TensorFlow takes a while: the liveness
        # probe only starts once the server answered once (up to 5 minutes).
        "startupProbe": {
            "httpGet": {"path": "/livez", **http_get},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 60,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "bentoml-home", "mountPath": settings.bentoml_home},
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # Keep serving briefly after deletion starts, so ingresses stop routing to this pod
        # before it stops listening: no request fails during a rollout.
        "lifecycle": {"preStop": {"sleep": {"seconds": 2}}},
    }


def build_deployment(
    target: ServingTarget, state: RolloutState, settings: RolloutSettings
) -> dict[str, Any]:
    """The `<watch>-serving` Deployment serving `state.current`, state in its annotations.

    The pod template is a pure function of (spec, release): setting the release back to an
    older one reproduces that release's template exactly, so the controller re-uses its
    ReplicaSet (whose pods never stopped) instead of starting new pods.
    """
    watch = target.watch.name
    serving = target.serving
    release = state.current
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": target.name,
            "namespace": target.watch.namespace,
            "labels": object_labels(watch),
            "annotations": state.annotations(),
            "ownerReferences": [target.watch.owner_reference()],
        },
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": selector_labels(watch)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "progressDeadlineSeconds": serving.progress_deadline_seconds,
            "revisionHistoryLimit": serving.history_limit,
            "template": {
                "metadata": {
                    "labels": object_labels(watch),
                    "annotations": {
                        ANN_BENTO_URI: release.bento_uri,
                        ANN_MODEL_VERSION: release.model_version,
                    },
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": settings.run_as_user,
                        "runAsGroup": settings.run_as_user,
                        "fsGroup": settings.run_as_user,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [_container(target, release, settings)],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "bentoml-home", "emptyDir": {"sizeLimit": "4Gi"}},
                    ],
                },
            },
        },
    }


def build_service(target: ServingTarget) -> dict[str, Any]:
    """ClusterIP Service, port 80 -> the container's port named `http`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": target.name,
            "namespace": target.watch.namespace,
            "labels": object_labels(target.watch.name),
            "ownerReferences": [target.watch.owner_reference()],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(target.watch.name),
            "ports": [
                {
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def build_ingress(target: ServingTarget) -> dict[str, Any] | None:
    """The Ingress when `spec.serving.ingress` is set, else None (an old one is deleted)."""
    ing = target.serving.ingress
    if ing is None:
        return None
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": ing.host,
                "http": {
                    "paths": [
                        {
                            "path": ing.path,
                            "pathType": "Prefix",
                            "backend": {"service": {"name": target.name, "port": {"name": "http"}}},
                        }
                    ]
                },
            }
        ]
    }
    if ing.class_name:
        spec["ingressClassName"] = ing.class_name
    if ing.tls_secret_name:
        spec["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": target.name,
            "namespace": target.watch.namespace,
            "labels": object_labels(target.watch.name),
            "ownerReferences": [target.watch.owner_reference()],
        },
        "spec": spec,
    }


def serving_url(target: ServingTarget, settings: RolloutSettings) -> str:
    """The URL clients use: the Ingress's (https when TLS) or the in-cluster Service's."""
    ing = target.serving.ingress
    if ing is not None:
        scheme = "https" if ing.tls_secret_name else "http"
        return f"{scheme}://{ing.host}{ing.path}"
    return f"http://{target.name}.{target.watch.namespace}.svc.{settings.cluster_domain}"


@dataclass(frozen=True)
class DesiredObjects:
    deployment: dict[str, Any]
    service: dict[str, Any]
    ingress: dict[str, Any] | None
    spec_hash: str
    """Digest of everything except the rollout state: differs from the live Deployment's
    `kubetrain.dev/spec-hash` exactly when a spec edit must be applied."""


def desired_objects(
    target: ServingTarget, state: RolloutState, settings: RolloutSettings
) -> DesiredObjects:
    deployment = build_deployment(target, state, settings)
    service = build_service(target)
    ingress = build_ingress(target)
    stateless = {**deployment, "metadata": {**deployment["metadata"], "annotations": {}}}
    digest = short_hash(json.dumps([stateless, service, ingress], sort_keys=True), 16)
    deployment["metadata"]["annotations"][ANN_SPEC_HASH] = digest
    return DesiredObjects(deployment, service, ingress, digest)
