"""manifests/ is a rendering of the chart: it must stand on its own.

These tests read the files as a kubectl user gets them, and need no binary. The drift tests
(re-render the chart exactly like `tools/harness/gen_manifests.py` and compare) need helm and are in
tests/platform/test_packaging_chart_render.py. The examples are hand-written; their validity
against the real CRD is a platform test (server-side dry run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gen_manifests
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
EXAMPLES = MANIFESTS / "examples"


def objects(directory: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def test_manifests_crds_are_the_charts_crd_files() -> None:
    """crds/ is copied verbatim by `helm template --include-crds`, so this part of the drift
    check needs no helm: a CRD edited without regenerating manifests/ fails here."""
    chart = [
        d
        for path in sorted((REPO / "charts" / "kubetrain" / "crds").glob("*.yaml"))
        for d in yaml.safe_load_all(path.read_text())
        if d
    ]
    shipped = [d for d in yaml.safe_load_all((MANIFESTS / "10-crds.yaml").read_text()) if d]
    by_name = {d["metadata"]["name"]: d for d in shipped}
    assert sorted(by_name) == sorted(d["metadata"]["name"] for d in chart)
    for crd in chart:
        assert by_name[crd["metadata"]["name"]] == crd, (
            f"manifests/10-crds.yaml differs from the chart's {crd['metadata']['name']}; run "
            "`.venv/bin/python tools/harness/gen_manifests.py`"
        )


def test_manifests_hold_crds_rbac_and_operator_in_apply_order() -> None:
    files = sorted(p.name for p in MANIFESTS.glob("*.yaml"))
    assert files == [
        "00-namespace.yaml",
        "10-crds.yaml",
        "20-rbac.yaml",
        "30-operator.yaml",
        "40-peering.yaml",
    ]
    kinds_by_file = {
        name: {d["kind"] for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d}
        for name in files
    }
    assert kinds_by_file["00-namespace.yaml"] == {"Namespace"}
    assert kinds_by_file["10-crds.yaml"] == {"CustomResourceDefinition"}
    assert kinds_by_file["20-rbac.yaml"] == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    assert kinds_by_file["30-operator.yaml"] == {"Deployment", "Service"}
    assert kinds_by_file["40-peering.yaml"] == {"ClusterKopfPeering"}
    crds = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all((MANIFESTS / "10-crds.yaml").read_text())
        if d
    }
    assert crds == {
        "datasetwatches.kubetrain.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }


def test_manifests_are_plain_kubectl_objects_in_one_namespace() -> None:
    text = "".join(p.read_text() for p in sorted(MANIFESTS.glob("*.yaml")))
    assert "helm.sh/chart" not in text
    assert "managed-by: Helm" not in text
    assert "{{" not in text
    for obj in objects(MANIFESTS):
        ns = obj["metadata"].get("namespace")
        assert ns in (None, "kubetrain"), obj["metadata"]
    dep = next(o for o in objects(MANIFESTS) if o["kind"] == "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["kubetrain-operator"] and c["args"] == ["--all-namespaces"]
    ns = next(o for o in objects(MANIFESTS) if o["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_example_secret_is_a_clearly_marked_placeholder() -> None:
    secrets = {o["metadata"]["name"]: o for o in objects(EXAMPLES) if o["kind"] == "Secret"}
    assert set(secrets) == {"mnist-minio-credentials", "kubetrain-webhook"}
    assert set(secrets["mnist-minio-credentials"]["stringData"]) == {"accessKey", "secretKey"}
    assert set(secrets["kubetrain-webhook"]["stringData"]) == {"token"}
    for secret in secrets.values():
        for value in secret["stringData"].values():
            assert value.startswith("REPLACE-ME"), value
    assert "PLACEHOLDERS" in (EXAMPLES / "credentials-secret.yaml").read_text()
    assert "PLACEHOLDER" in (EXAMPLES / "webhook-token-secret.yaml").read_text()
    # The operator from manifests/ reads its token from exactly that Secret and key.
    dep = next(o for o in objects(MANIFESTS) if o["kind"] == "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    token = next(e for e in c["env"] if e["name"] == "KUBETRAIN_OPERATOR_WEBHOOK_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {
        "name": "kubetrain-webhook",
        "key": "token",
        "optional": True,
    }


def test_example_watch_uses_the_example_secret_and_the_mnist_bucket() -> None:
    (dsw,) = [o for o in objects(EXAMPLES) if o["kind"] == "DatasetWatch"]
    (secret,) = [
        o
        for o in objects(EXAMPLES)
        if o["kind"] == "Secret" and "accessKey" in o.get("stringData", {})
    ]
    source = dsw["spec"]["source"]
    assert source["bucket"] == "mnist" and source["prefix"] == "dataset/"
    assert source["credentialsSecretRef"]["name"] == secret["metadata"]["name"]
    assert dsw["spec"]["trigger"]["threshold"] == 200
    # The operator from manifests/ may read exactly that Secret.
    role = next(o for o in objects(MANIFESTS) if o["kind"] == "ClusterRole")
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert secret_rules == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [secret["metadata"]["name"]],
            "verbs": ["get"],
        }
    ]


def test_example_credentials_role_names_the_operator_service_account() -> None:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "credentials-rbac.yaml").read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role")
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["mnist-minio-credentials"],
            "verbs": ["get"],
        }
    ]
    sa = next(o for o in objects(MANIFESTS) if o["kind"] == "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "kubetrain"}
    ]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_generator_names_the_template_of_broken_yaml_and_unplaceable_kinds() -> None:
    broken = "---\n# Source: kubetrain/crds/x.yaml\nkind: A\n  description: a: b\n"
    with pytest.raises(
        gen_manifests.ManifestError, match=r"invalid YAML in kubetrain/crds/x\.yaml"
    ):
        gen_manifests.split_documents(broken)
    stray = "---\n# Source: kubetrain/templates/x.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
    with pytest.raises(
        gen_manifests.ManifestError, match=r"ConfigMap 'x' has no place in manifests/"
    ):
        gen_manifests.build(stray)


def _null_valued_keys(node: Any, where: str) -> list[str]:
    """Paths of null values. A CRD schema never needs one: it is always a YAML slip, such as
    an unquoted comma in a flow mapping (`{type: string, description: a, b.}` gains a key
    `b.` with a null value), which the apiserver refuses at install time."""
    if isinstance(node, dict):
        found = [f"{where}.{k}" for k, v in node.items() if v is None]
        for k, v in node.items():
            found += _null_valued_keys(v, f"{where}.{k}")
        return found
    if isinstance(node, list):
        return [f for i, v in enumerate(node) for f in _null_valued_keys(v, f"{where}[{i}]")]
    return []


@pytest.mark.parametrize(
    "path",
    [*sorted((REPO / "charts" / "kubetrain" / "crds").glob("*.yaml")), MANIFESTS / "10-crds.yaml"],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_crd_schemas_hold_no_null_keys(path: Path) -> None:
    """Checked offline, so the slip fails here and not first in helm install."""
    faults: list[str] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            schema = doc["spec"]["versions"]
            faults += _null_valued_keys(schema, doc["metadata"]["name"])
    assert faults == []


def test_null_key_check_catches_an_unquoted_comma() -> None:
    slip = yaml.safe_load("p: {type: string, description: The Bento, after a rollback.}")
    assert _null_valued_keys(slip, "x") == ["x.p.after a rollback."]
