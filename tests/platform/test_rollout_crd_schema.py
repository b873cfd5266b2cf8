"""The `spec.serving` / `status.serving` CRD schema proposed for the DatasetWatch CRD.

The DatasetWatch CRD is the lead's file; this test holds the exact schema text proposed for
it and checks it against the real apiserver on a throwaway CRD of a unique group: it is
structural, applies the defaults `rollout.parse_serving` assumes, rejects bad values with
messages naming the field, and keeps (does not prune) every field of the status that
`rollout_apply` returns.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiException
from kubetrain_operator import rollout, rollout_apply

pytestmark = pytest.mark.platform

# --- the proposal (copied verbatim into the report for charts/kubetrain/crds/) -------------
SERVING_SPEC_SCHEMA = r"""
type: object
description: >-
  How promoted models are served: a Deployment, a Service and optionally an Ingress, all
  named <watch>-serving and owned by this watch (docs/rollout.md).
default: {}
properties:
  enabled:
    type: boolean
    default: true
    description: Roll out promoted models. When false nothing is created or changed.
  image:
    type: string
    description: Serving image (must contain kubetrain-serve); default spec.training.image.
  imagePullPolicy:
    type: string
    enum: [Always, IfNotPresent, Never]
    default: IfNotPresent
  replicas:
    type: integer
    minimum: 1
    maximum: 100
    default: 1
  port:
    type: integer
    minimum: 1024
    maximum: 65535
    default: 3000
    description: Container port of kubetrain-serve (non-root, so >= 1024); the Service exposes it on port 80.
  resources:
    type: object
    description: Resources of the serving container; default requests cpu 250m, memory 512Mi, limit memory 2Gi.
    properties:
      requests:
        type: object
        additionalProperties:
          anyOf: [{type: integer}, {type: string}]
          pattern: ^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$
          x-kubernetes-int-or-string: true
      limits:
        type: object
        additionalProperties:
          anyOf: [{type: integer}, {type: string}]
          pattern: ^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$
          x-kubernetes-int-or-string: true
  historyLimit:
    type: integer
    minimum: 1
    maximum: 100
    default: 5
    description: >-
      Bentos of this model kept in the bucket (.kubetrain/bentos/); the serving and the
      previous one are always kept. Also the Deployment's revisionHistoryLimit.
  progressDeadlineSeconds:
    type: integer
    minimum: 5
    maximum: 86400
    default: 600
    description: >-
      A newly promoted model whose ReplicaSet makes no progress for this long
      (ProgressDeadlineExceeded) is rolled back to the previous model.
  ingress:
    type: object
    description: Create an Ingress (networking.k8s.io/v1) for the Service.
    required: [host]
    properties:
      host:
        type: string
        maxLength: 253
        pattern: ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$
        description: DNS name, e.g. digits.example.com (no wildcards).
      path:
        type: string
        default: /
        pattern: ^/[^\s?#]*$
        description: Path prefix (pathType Prefix).
      className:
        type: string
        description: ingressClassName; empty means the cluster's default class.
      tlsSecretName:
        type: string
        description: TLS Secret for host; set, the reported URL is https.
"""

SERVING_STATUS_SCHEMA = r"""
type: object
description: The serving rollout, recomputed by the operator from the Deployment (docs/rollout.md).
properties:
  phase:
    type: string
    enum: [Progressing, Available, RolledBack, Failed]
  modelName: {type: string}
  modelVersion: {type: string, description: The version the Deployment is set to.}
  bentoUri: {type: string}
  previousModelVersion: {type: string}
  previousBentoUri: {type: string, description: The rollback target (last model proven to serve).}
  rolledBackFrom: {type: string, description: The Bento that missed its deadline, after a rollback.}
  rolloutStarted: {type: string, format: date-time}
  deployment: {type: string}
  service: {type: string}
  ingress: {type: string}
  url: {type: string}
  replicas: {type: integer}
  readyReplicas: {type: integer}
  availableReplicas: {type: integer}
  updatedReplicas: {type: integer}
  conditions:
    type: array
    x-kubernetes-list-type: map
    x-kubernetes-list-map-keys: [type]
    items:
      type: object
      required: [type, status]
      properties:
        type: {type: string}
        status: {type: string, enum: ["True", "False", "Unknown"]}
        reason: {type: string}
        message: {type: string}
        lastTransitionTime: {type: string, format: date-time}
"""


@pytest.fixture
def schema_crd(kube: Any) -> Iterator[tuple[rollout_apply.Kube, str]]:
    k = rollout_apply.Kube(kube, 30)
    group = f"g{uuid.uuid4().hex[:8]}.rollout.test"
    name = f"servings.{group}"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "servings", "singular": "serving", "kind": "Serving"},
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
                                    "properties": {"serving": yaml.safe_load(SERVING_SPEC_SCHEMA)},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {
                                        "serving": yaml.safe_load(SERVING_STATUS_SCHEMA)
                                    },
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    k.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=crd)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = k.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
            conds = (got.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"CRD {name} not Established: {conds}")
        yield k, group
    finally:
        k.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")


def _create(
    k: rollout_apply.Kube, group: str, ns: str, name: str, spec: dict[str, Any]
) -> dict[str, Any]:
    body = {
        "apiVersion": f"{group}/v1",
        "kind": "Serving",
        "metadata": {"name": name},
        "spec": spec,
    }
    deadline = time.monotonic() + 30
    while True:
        try:
            return k.request("POST", f"/apis/{group}/v1/namespaces/{ns}/servings", body=body)
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # discovery catching up with the new CRD


def test_defaults_match_the_parser(
    schema_crd: tuple[rollout_apply.Kube, str], namespace: str
) -> None:
    k, group = schema_crd
    got = _create(k, group, namespace, "d", {})
    serving = got["spec"]["serving"]
    assert serving == {
        "enabled": True,
        "imagePullPolicy": "IfNotPresent",
        "replicas": 1,
        "port": 3000,
        "historyLimit": 5,
        "progressDeadlineSeconds": 600,
    }
    parsed = rollout.parse_serving({"serving": serving})
    assert parsed == rollout.parse_serving({})
    got = _create(k, group, namespace, "i", {"serving": {"ingress": {"host": "a.example.com"}}})
    assert got["spec"]["serving"]["ingress"] == {"host": "a.example.com", "path": "/"}


@pytest.mark.parametrize(
    ("serving", "field"),
    [
        ({"replicas": 0}, "spec.serving.replicas"),
        ({"port": 80}, "spec.serving.port"),
        ({"historyLimit": 0}, "spec.serving.historyLimit"),
        ({"progressDeadlineSeconds": 1}, "spec.serving.progressDeadlineSeconds"),
        ({"ingress": {"path": "/x"}}, "spec.serving.ingress.host"),
        ({"ingress": {"host": "Bad_Host"}}, "spec.serving.ingress.host"),
        ({"ingress": {"host": "a.example.com", "path": "x"}}, "spec.serving.ingress.path"),
        ({"resources": {"limits": {"memory": "lots"}}}, "spec.serving.resources.limits"),
        ({"imagePullPolicy": "Sometimes"}, "spec.serving.imagePullPolicy"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(
    schema_crd: tuple[rollout_apply.Kube, str], namespace: str, serving: dict[str, Any], field: str
) -> None:
    k, group = schema_crd
    with pytest.raises(ApiException) as info:
        _create(k, group, namespace, "bad", {"serving": serving})
    assert info.value.status == 422
    assert field in (info.value.body or ""), info.value.body


def test_status_from_the_rollout_is_kept_whole(
    schema_crd: tuple[rollout_apply.Kube, str], namespace: str
) -> None:
    k, group = schema_crd
    _create(k, group, namespace, "s", {"serving": {"ingress": {"host": "a.example.com"}}})
    target = rollout.parse_target(
        {
            "metadata": {"name": "s", "namespace": namespace, "uid": "u"},
            "spec": {
                "source": {"endpoint": "http://m:9000", "credentialsSecretRef": {"name": "c"}},
                "serving": {"ingress": {"host": "a.example.com", "tlsSecretName": "t"}},
            },
        },
        rollout.RolloutSettings(),
    )
    v1 = rollout.Release("s3://b/.kubetrain/bentos/m-1.bento", "1", "m")
    v2 = rollout.Release("s3://b/.kubetrain/bentos/m-2.bento", "2", "m")
    state = rollout.RolloutState(
        current=v1,
        phase=rollout.Phase.ROLLED_BACK,
        started="2026-11-26T06:00:00Z",
        rolled_back_from=v2,
        message="m v2 was not available within progressDeadlineSeconds=5",
    )
    obs = rollout.RolloutObservation(
        replicas=1, total=1, updated=1, ready=1, available=1, observed=True, complete=True
    )
    status = rollout.serving_status(
        target, state, obs, rollout.RolloutSettings(), now="2026-11-26T06:00:05Z"
    )
    got = k.request(
        "PATCH",
        f"/apis/{group}/v1/namespaces/{namespace}/servings/s/status",
        body={"status": {"serving": status}},
        content_type="application/merge-patch+json",
    )
    assert got["status"]["serving"] == status
