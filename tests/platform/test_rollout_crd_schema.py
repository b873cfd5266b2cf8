"""The shipped DatasetWatch CRD's `spec.serving` / `status.serving` on a real apiserver.

charts/kubetrain/crds/datasetwatch.yaml is applied verbatim except for its API group (unique
per test, so the real kubetrain.dev CRD and any operator watching it are untouched): it is
structural, applies the defaults `spec.parse_serving` assumes (also to a watch without
`spec.serving`), rejects bad values with messages naming the field, and keeps (does not
prune) every field of the status that `serving_rollout.status.serving_status` writes. The same file is
checked statically, against the operator's parser and status writer, by
tests/unit/test_packaging_chart.py.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubetrain_operator.kube import Kube, KubeError
from kubetrain_operator.serving_rollout.state import Phase
from kubetrain_operator.spec import parse_serving

from tests.support.chart import BAD_SERVING, SERVING_SOURCE, load_crd, serving_statuses

pytestmark = pytest.mark.platform

SHIPPED = load_crd()
NAMES = SHIPPED["spec"]["names"]
(VERSION,) = [v["name"] for v in SHIPPED["spec"]["versions"] if v["storage"]]


@pytest.fixture
def schema_crd(kube: Any) -> Iterator[tuple[Kube, str]]:
    k = Kube(kube, timeout=30)
    group = f"g{uuid.uuid4().hex[:8]}.rollout.test"
    name = f"{NAMES['plural']}.{group}"
    crd = copy.deepcopy(SHIPPED)
    crd["metadata"] = {"name": name}  # no kubetrain labels: nothing may take it for the real one
    crd["spec"]["group"] = group
    # Short names and categories would make `kubectl get dsw` ambiguous while it exists.
    for key in ("shortNames", "categories"):
        crd["spec"]["names"].pop(key, None)
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


def _path(group: str, ns: str) -> str:
    return f"/apis/{group}/{VERSION}/namespaces/{ns}/{NAMES['plural']}"


def _create(
    k: Kube, group: str, ns: str, name: str, serving: dict[str, Any] | None
) -> dict[str, Any]:
    """A watch with a valid source and `spec.serving` (none at all when None)."""
    spec: dict[str, Any] = {"source": copy.deepcopy(SERVING_SOURCE)}
    if serving is not None:
        spec["serving"] = serving
    body = {
        "apiVersion": f"{group}/{VERSION}",
        "kind": NAMES["kind"],
        "metadata": {"name": name},
        "spec": spec,
    }
    deadline = time.monotonic() + 30
    while True:
        try:
            return k.request("POST", _path(group, ns), body=body)
        except KubeError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # discovery catching up with the new CRD


def test_defaults_match_the_parser(schema_crd: tuple[Kube, str], namespace: str) -> None:
    k, group = schema_crd
    got = _create(k, group, namespace, "d", None)
    serving = got["spec"]["serving"]
    assert serving == {
        "enabled": True,
        "imagePullPolicy": "IfNotPresent",
        "replicas": 1,
        "port": 3000,
        "historyLimit": 5,
        "progressDeadlineSeconds": 600,
    }
    parsed = parse_serving({"serving": serving})
    assert parsed == parse_serving({})
    got = _create(k, group, namespace, "i", {"ingress": {"host": "a.example.com"}})
    assert got["spec"]["serving"]["ingress"] == {"host": "a.example.com", "path": "/"}


@pytest.mark.parametrize(("serving", "field"), BAD_SERVING)
def test_bad_values_are_rejected_naming_the_field(
    schema_crd: tuple[Kube, str], namespace: str, serving: dict[str, Any], field: str
) -> None:
    k, group = schema_crd
    with pytest.raises(KubeError) as info:
        _create(k, group, namespace, "bad", serving)
    assert info.value.status == 422
    assert field in (info.value.body or ""), info.value.body


def test_status_from_the_rollout_is_kept_whole(
    schema_crd: tuple[Kube, str], namespace: str
) -> None:
    """Each status.serving the operator writes (every phase and condition branch) survives
    a merge patch of the status subresource unchanged: nothing pruned, nothing rejected."""
    k, group = schema_crd
    statuses = serving_statuses()
    assert {s["phase"] for s in statuses} == set(Phase)
    for i, status in enumerate(statuses):
        name = f"s{i}"  # a fresh watch each: a merge patch would keep an omitted field
        _create(k, group, namespace, name, {"ingress": {"host": "a.example.com"}})
        got = k.request(
            "PATCH",
            f"{_path(group, namespace)}/{name}/status",
            body={"status": {"serving": status}},
            content_type="application/merge-patch+json",
        )
        assert got["status"]["serving"] == status, i
