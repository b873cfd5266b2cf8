"""charts/kubetrain rendered by the real helm binary: lint, every ci/ scenario inspected,
schema rejection through helm, NOTES, the packaged archive, and manifests/ drift.

These tests need the helm binary of the platform build (`make binaries`) and nothing else:
no node, no apiserver, no fixture that starts a platform. They carry the `platform` marker so
that `make test-unit` (`-m "not platform"`) runs on a machine without built binaries; run
them directly with `pytest tests/platform/test_packaging_chart_render.py`. What needs no
binary (values, schema, CRD schema, .helmignore) is in tests/unit/test_packaging_chart.py;
what the apiserver says about the objects is in tests/platform/test_packaging_install.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gen_manifests
import pytest

from tests.support.chart import BAD_VALUES, CHART, CI, REPO, SCENARIOS
from tests.support.psa import restricted_violations
from tests.support.skaffold import SKAFFOLD, release, template_keys

pytestmark = pytest.mark.platform

NS = "kt-test"
RELEASE = "kt"
MANIFESTS = REPO / "manifests"

HELM = gen_manifests.find_helm()


@pytest.fixture(autouse=True)
def _need_helm() -> None:
    # A missing build is a loud failure, never a skip.
    if HELM is None:
        pytest.fail("helm binary not built: run `make binaries` (tools/harness/platform/build.sh)")


POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "Pod"}
Obj = dict[str, Any]


def render(*values: Path, sets: tuple[str, ...] = (), namespace: str = NS) -> list[Obj]:
    assert HELM is not None
    text = gen_manifests.helm_template(
        HELM, release=RELEASE, namespace=namespace, values=values, sets=sets, include_crds=False
    )
    return gen_manifests.load_objects(text)


def render_fails(*sets: str) -> str:
    """stderr of a render that must fail."""
    with pytest.raises(gen_manifests.ManifestError) as info:
        render(sets=sets)
    return str(info.value)


@pytest.fixture(scope="module")
def scenarios() -> dict[str, list[Obj]]:
    return {name: render(CI / f"{name}-values.yaml") for name in SCENARIOS}


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, component: str | None = None) -> Obj:
    found = [
        o
        for o in by_kind(objs, kind)
        if component is None
        or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
    return found[0]


def pod_spec(obj: Obj) -> Obj:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def containers(obj: Obj) -> Iterator[Obj]:
    spec = pod_spec(obj)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def env_of(container: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def allows(rules: list[Obj], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    """RBAC semantics for one request against a rule list (what the authorizer does)."""
    for rule in rules:
        if group not in rule.get("apiGroups", []) and "*" not in rule.get("apiGroups", []):
            continue
        if resource not in rule.get("resources", []) and "*" not in rule.get("resources", []):
            continue
        if verb not in rule.get("verbs", []) and "*" not in rule.get("verbs", []):
            continue
        names = rule.get("resourceNames")
        if names and (name is None or name not in names):
            continue
        return True
    return False


# What the operator must be able to do in every namespace it serves (issue 4/6 + kopf).
NEEDED = [
    ("kubetrain.dev", "datasetwatches", ["get", "list", "watch", "patch", "update"]),
    ("kubetrain.dev", "datasetwatches/status", ["get", "patch", "update"]),
    ("", "events", ["create", "patch"]),
    ("events.k8s.io", "events", ["create", "patch"]),
    ("batch", "jobs", ["create", "get", "list", "watch", "delete", "patch"]),
    ("", "pods", ["get", "list", "watch"]),
    ("apps", "deployments", ["create", "get", "list", "watch", "patch", "update", "delete"]),
    ("", "services", ["create", "get", "list", "watch", "patch", "update", "delete"]),
    (
        "networking.k8s.io",
        "ingresses",
        ["create", "get", "list", "watch", "patch", "update", "delete"],
    ),
    ("apps", "replicasets", ["get", "list", "watch"]),
]
# What it must never be able to do.
FORBIDDEN = [
    ("", "secrets", "list", None),
    ("", "secrets", "watch", None),
    ("", "secrets", "get", "some-unrelated-secret"),
    ("", "secrets", "create", None),
    ("", "pods", "create", None),
    ("", "pods", "delete", None),
    ("", "pods/exec", "create", None),
    ("", "configmaps", "get", None),
    ("", "serviceaccounts", "create", None),
    ("rbac.authorization.k8s.io", "roles", "create", None),
    ("rbac.authorization.k8s.io", "clusterroles", "bind", None),
    ("rbac.authorization.k8s.io", "clusterroles", "escalate", None),
    ("", "serviceaccounts", "impersonate", None),
    ("apiextensions.k8s.io", "customresourcedefinitions", "create", None),
    ("apiextensions.k8s.io", "customresourcedefinitions", "delete", None),
    ("", "namespaces", "create", None),
]


# ------------------------------------------------------------------------------ lint & render


def test_helm_lint_strict_for_defaults_and_every_scenario() -> None:
    assert HELM is not None
    args = [str(HELM), "lint", str(CHART), "--strict", "--namespace", NS]
    for path in sorted(CI.glob("*-values.yaml")):
        proc = subprocess.run([*args, "--values", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"helm lint with {path.name}:\n{proc.stdout}\n{proc.stderr}"
        assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_renders_valid_named_objects(
    scenarios: dict[str, list[Obj]], scenario: str
) -> None:
    objs = scenarios[scenario]
    assert len(objs) >= 4, f"{scenario}: suspiciously few objects"
    seen: set[tuple[str, str, str]] = set()
    for o in objs:
        meta = o["metadata"]
        key = (o["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in seen, f"{scenario}: duplicate {key}"
        seen.add(key)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), key
        assert len(meta["name"]) <= 63, key
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "kubetrain", key
        assert labels.get("app.kubernetes.io/instance") == RELEASE, key


# ------------------------------------------------------------------------------ pods


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_sets_command_and_runs_locked_down(
    scenarios: dict[str, list[Obj]], scenario: str
) -> None:
    pods = [o for o in scenarios[scenario] if o["kind"] in POD_KINDS]
    assert pods, scenario
    for obj in pods:
        where = f"{scenario}: {obj['kind']}/{obj['metadata']['name']}"
        psc = pod_spec(obj)["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["runAsUser"] > 0, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in containers(obj):
            assert c.get("command"), f"{where}/{c['name']}: no explicit command"
            assert all(isinstance(x, str) and x for x in c["command"]), where
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "limits" in c["resources"] and "requests" in c["resources"], where
            writable = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if obj["kind"] != "Pod":  # the helm test pod only reads
                assert "/tmp" in writable, f"{where}: read-only root needs a /tmp volume"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_passes_pod_security_restricted(
    scenarios: dict[str, list[Obj]], scenario: str
) -> None:
    """The operator, MinIO, MLflow and helm-test pods are admitted by PodSecurity "restricted"
    (the namespace of manifests/ enforces it): no host namespaces, ports or paths, only
    restricted volume types (a StatefulSet's claims become persistentVolumeClaim volumes)."""
    pods = [o for o in scenarios[scenario] if o["kind"] in POD_KINDS]
    assert pods, scenario
    for obj in pods:
        spec = pod_spec(obj)
        claims = [
            {"name": t["metadata"]["name"], "persistentVolumeClaim": {"claimName": "x"}}
            for t in obj["spec"].get("volumeClaimTemplates", [])
        ]
        spec = {**spec, "volumes": [*spec.get("volumes", []), *claims]}
        where = f"{scenario}: {obj['kind']}/{obj['metadata']['name']}"
        assert restricted_violations(spec) == [], where


def test_pod_security_covers_every_component(scenarios: dict[str, list[Obj]]) -> None:
    components = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]
        for o in scenarios["default"]
        if o["kind"] in POD_KINDS
    }
    assert components == {"operator", "minio", "mlflow", "test"}


def test_operator_deployment_probes_ports_and_recreate(scenarios: dict[str, list[Obj]]) -> None:
    dep = one(scenarios["default"], "Deployment", "operator")
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = pod_spec(dep)["containers"]
    assert c["command"] == ["kubetrain-operator"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "webhook": 8081}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    tmp = next(v for v in pod_spec(dep)["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp
    env = env_of(c)
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_all_off_has_no_probes_but_still_a_command(scenarios: dict[str, list[Obj]]) -> None:
    (c,) = pod_spec(one(scenarios["all-off"], "Deployment", "operator"))["containers"]
    assert "livenessProbe" not in c and "readinessProbe" not in c
    assert c["command"] == ["kubetrain-operator"]


def test_metrics_service_selects_the_operator_port(scenarios: dict[str, list[Obj]]) -> None:
    objs = scenarios["default"]
    svc = one(objs, "Service", "metrics")
    dep = one(objs, "Deployment", "operator")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not [o for o in scenarios["all-off"] if o["kind"] == "Service"]


def test_service_monitor_scrapes_the_metrics_service(scenarios: dict[str, list[Obj]]) -> None:
    objs = scenarios["monitoring"]
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service", "metrics")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NS]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert not by_kind(scenarios["default"], "ServiceMonitor")


# ------------------------------------------------------------------------------ operator contract


def operator_process(objs: list[Obj]) -> tuple[list[str], dict[str, str]]:
    (c,) = pod_spec(one(objs, "Deployment", "operator"))["containers"]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    env["POD_NAMESPACE"] = NS  # what the fieldRef resolves to
    return c["args"], env


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_settings_load_from_the_rendered_args_and_env(
    scenarios: dict[str, list[Obj]], scenario: str
) -> None:
    """The chart's args/env go through the operator's real settings loader unchanged."""
    settings_mod = pytest.importorskip("kubetrain_operator.settings")
    args, env = operator_process(scenarios[scenario])
    fields = {f.upper() for f in settings_mod.OperatorSettings.__dataclass_fields__}
    for name in env:
        if name.startswith("KUBETRAIN_"):
            assert name.startswith(settings_mod.ENV_PREFIX), name
            assert name.removeprefix(settings_mod.ENV_PREFIX) in fields, f"{name}: no such setting"
    s = settings_mod.load_settings(args, env)
    assert s.health_port == 8080 and s.metrics_port == 9090
    assert s.peering_name == "kubetrain"
    assert s.default_image == "kubetrain-trainer:0.1.0"
    if scenario == "namespaced":
        assert (s.all_namespaces, s.namespaces) == (False, (NS,))
    else:
        assert (s.all_namespaces, s.namespaces) == (True, ())
    if scenario == "all-off":
        assert s.webhook_port == 0
    else:
        assert (s.webhook_port, s.webhook_path) == (8081, "/minio/events")


def test_operator_default_mlflow_uri_follows_the_bundled_or_external_server(
    scenarios: dict[str, list[Obj]],
) -> None:
    _, env = operator_process(scenarios["default"])
    assert (
        env["KUBETRAIN_OPERATOR_DEFAULT_MLFLOW_URI"] == f"http://kt-kubetrain-mlflow.{NS}.svc:5000"
    )
    _, env = operator_process(scenarios["external-endpoints"])
    assert env["KUBETRAIN_OPERATOR_DEFAULT_MLFLOW_URI"] == "http://mlflow.mlops.svc:5000"
    _, env = operator_process(scenarios["all-off"])
    assert "KUBETRAIN_OPERATOR_DEFAULT_MLFLOW_URI" not in env


def test_settings_override_and_extend_and_roll_the_pod() -> None:
    base = one(render(), "Deployment", "operator")
    objs = render(
        sets=(
            "operator.settings.KUBETRAIN_OPERATOR_LOG_LEVEL=DEBUG",
            "operator.settings.KUBETRAIN_OPERATOR_DEFAULT_IMAGE=reg.example/trainer:x",
        )
    )
    dep = one(objs, "Deployment", "operator")
    (c,) = pod_spec(dep)["containers"]
    env = env_of(c)
    assert env["KUBETRAIN_OPERATOR_LOG_LEVEL"] == "DEBUG"
    assert env["KUBETRAIN_OPERATOR_DEFAULT_IMAGE"] == "reg.example/trainer:x"
    assert [e["name"] for e in c["env"]].count("KUBETRAIN_OPERATOR_DEFAULT_IMAGE") == 1
    key = "checksum/settings"
    assert (
        dep["spec"]["template"]["metadata"]["annotations"][key]
        != base["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_watch_namespaces_list_renders_flags_roles_and_peerings() -> None:
    objs = render(sets=("watch.scope=namespaced", "watch.namespaces={team-a,team-b}"))
    args, _ = operator_process(objs)
    assert args == ["--namespace", "team-a", "--namespace", "team-b"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objs, "Role")) == ["team-a", "team-b"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objs, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    assert sorted(p["metadata"]["namespace"] for p in by_kind(objs, "KopfPeering")) == [
        "team-a",
        "team-b",
    ]
    for rb in by_kind(objs, "RoleBinding"):
        assert rb["subjects"] == [
            {"kind": "ServiceAccount", "name": "kt-kubetrain-operator", "namespace": NS}
        ]


def test_images_tag_default_override_and_digest() -> None:
    (c,) = pod_spec(one(render(), "Deployment", "operator"))["containers"]
    assert c["image"] == "kubetrain-operator:0.1.0"
    objs = render(sets=("operator.image.repository=reg.example/op", "operator.image.tag=abc123"))
    (c,) = pod_spec(one(objs, "Deployment", "operator"))["containers"]
    assert c["image"] == "reg.example/op:abc123"
    digest = "sha256:" + "a" * 64
    objs = render(
        sets=(
            "operator.image.tag=abc123",
            f"operator.image.digest={digest}",
            f"trainer.image.digest={digest}",
        )
    )
    (c,) = pod_spec(one(objs, "Deployment", "operator"))["containers"]
    assert c["image"] == f"kubetrain-operator@{digest}"
    assert env_of(c)["KUBETRAIN_OPERATOR_DEFAULT_IMAGE"] == f"kubetrain-trainer@{digest}"


# ------------------------------------------------------------------------------ RBAC


def rules_for(objs: list[Obj], namespace: str | None) -> list[Obj]:
    """All rules that apply to the operator SA in `namespace` (None: cluster-scoped requests)."""
    rules: list[Obj] = []
    bound_cluster = {b["roleRef"]["name"] for b in by_kind(objs, "ClusterRoleBinding")}
    for cr in by_kind(objs, "ClusterRole"):
        if cr["metadata"]["name"] in bound_cluster:
            rules += cr["rules"]
    if namespace is not None:
        bound = {
            b["roleRef"]["name"]
            for b in by_kind(objs, "RoleBinding")
            if b["metadata"]["namespace"] == namespace
        }
        for role in by_kind(objs, "Role"):
            if role["metadata"]["namespace"] == namespace and role["metadata"]["name"] in bound:
                rules += role["rules"]
    return rules


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_can_do_what_it_needs_in_served_namespaces(
    scenarios: dict[str, list[Obj]], scenario: str
) -> None:
    objs = scenarios[scenario]
    served = NS if scenario == "namespaced" else "any-namespace"
    rules = rules_for(objs, served)
    for group, resource, verbs in NEEDED:
        for verb in verbs:
            assert allows(rules, group, resource, verb), (
                f"{scenario}: cannot {verb} {group}/{resource}"
            )
    peering = "kopfpeerings" if scenario == "namespaced" else "clusterkopfpeerings"
    for verb in ("get", "list", "watch", "patch"):
        assert allows(rules, "kopf.dev", peering, verb), f"{scenario}: peering {verb}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_operator_cannot_do_more(scenarios: dict[str, list[Obj]], scenario: str) -> None:
    objs = scenarios[scenario]
    rules = rules_for(objs, NS) + rules_for(objs, None)
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), f"{scenario}: wildcard in {rule}"
    for group, resource, verb, name in FORBIDDEN:
        assert not allows(rules, group, resource, verb, name), (
            f"{scenario}: may {verb} {resource} {name}"
        )


def test_namespaced_scope_has_no_cluster_scoped_grant_at_all(
    scenarios: dict[str, list[Obj]],
) -> None:
    objs = scenarios["namespaced"]
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    assert rules_for(objs, "other-namespace") == []
    (peering,) = by_kind(objs, "KopfPeering")
    assert peering["metadata"] == peering["metadata"] | {"name": "kubetrain", "namespace": NS}


def test_cluster_scope_names_are_namespace_qualified(scenarios: dict[str, list[Obj]]) -> None:
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        (obj,) = by_kind(scenarios["default"], kind)
        assert obj["metadata"]["name"] == f"{NS}-kt-kubetrain"
    crb = one(scenarios["default"], "ClusterRoleBinding")
    assert crb["subjects"] == [
        {"kind": "ServiceAccount", "name": "kt-kubetrain-operator", "namespace": NS}
    ]


def secret_rules(objs: list[Obj]) -> list[Obj]:
    return [r for r in rules_for(objs, NS) if "secrets" in r["resources"]]


def test_secret_access_by_name_includes_bundled_minio_and_declared_watches(
    scenarios: dict[str, list[Obj]],
) -> None:
    (rule,) = secret_rules(scenarios["default"])
    assert rule["verbs"] == ["get"]
    assert rule["resourceNames"] == ["kt-kubetrain-minio", "mnist-minio-credentials"]
    (rule,) = secret_rules(scenarios["external-endpoints"])
    assert rule["resourceNames"] == ["mnist-minio-credentials", "team-a-minio-credentials"]
    objs = render(
        sets=(
            "minio.enabled=false",
            "rbac.secretAccess.names=null",
            "datasetWatches[0].name=w",
            "datasetWatches[0].spec.source.credentialsSecretRef.name=w-creds",
        )
    )
    (rule,) = secret_rules(objs)
    assert rule["resourceNames"] == ["w-creds"]


def test_secret_access_all_and_none(scenarios: dict[str, list[Obj]]) -> None:
    (rule,) = secret_rules(render(sets=("rbac.secretAccess.mode=all",)))
    assert rule["verbs"] == ["get"] and "resourceNames" not in rule
    assert secret_rules(scenarios["all-off"]) == []
    # "names" with nothing to name: no rule rather than an empty resourceNames (= all Secrets).
    objs = render(sets=("minio.enabled=false", "rbac.secretAccess.names=null"))
    assert secret_rules(objs) == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_scope_may_touch_crds_or_namespaces(
    scenarios: dict[str, list[Obj]], scenario: str
) -> None:
    """kopf's cluster scanning is off in the operator, so neither is needed (least privilege)."""
    rules = rules_for(scenarios[scenario], None) + rules_for(scenarios[scenario], NS)
    for verb in ("get", "list", "watch"):
        assert not allows(rules, "apiextensions.k8s.io", "customresourcedefinitions", verb)
        assert not allows(rules, "", "namespaces", verb)


# ------------------------------------------------------------------------------ MinIO / MLflow


def test_minio_statefulset_secret_and_service(scenarios: dict[str, list[Obj]]) -> None:
    objs = scenarios["default"]
    sts = one(objs, "StatefulSet", "minio")
    (c,) = pod_spec(sts)["containers"]
    assert c["command"][:3] == ["minio", "server", "/export/data"]
    assert c["image"].startswith("quay.io/minio/minio:RELEASE.")
    env = env_of(c)
    assert env["MINIO_UPDATE"] == "off"
    assert env["MINIO_ROOT_USER"] == {
        "secretKeyRef": {"name": "kt-kubetrain-minio", "key": "rootUser"}
    }
    assert env["MINIO_ROOT_PASSWORD"] == {
        "secretKeyRef": {"name": "kt-kubetrain-minio", "key": "rootPassword"}
    }
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    secret = one(objs, "Secret", "minio")
    assert set(secret["data"]) == {"rootUser", "rootPassword", "accessKey", "secretKey"}
    assert secret["data"]["accessKey"] == secret["data"]["rootUser"]
    assert len(secret["data"]["rootPassword"]) >= 40  # base64 of a 40-char generated password
    svc = next(s for s in by_kind(objs, "Service") if s["metadata"]["name"] == "kt-kubetrain-minio")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"s3": 9000, "console": 9001}


def test_minio_existing_secret_and_no_persistence() -> None:
    objs = render(sets=("minio.auth.existingSecret=my-minio", "minio.persistence.enabled=false"))
    assert not [s for s in by_kind(objs, "Secret") if "minio" in s["metadata"]["name"]]
    sts = one(objs, "StatefulSet", "minio")
    assert "volumeClaimTemplates" not in sts["spec"]
    assert {"name": "data", "emptyDir": {}} in pod_spec(sts)["volumes"]
    (c,) = pod_spec(sts)["containers"]
    assert env_of(c)["MINIO_ROOT_USER"]["secretKeyRef"]["name"] == "my-minio"
    (rule,) = secret_rules(objs)
    assert "my-minio" in rule["resourceNames"]


def mlflow_allowed_hosts(objs: list[Obj]) -> list[str]:
    (c,) = pod_spec(one(objs, "Deployment", "mlflow"))["containers"]
    cmd = c["command"]
    return cmd[cmd.index("--allowed-hosts") + 1].split(",")


def test_mlflow_allowed_hosts_accept_the_service_names_per_mlflows_own_check(
    scenarios: dict[str, list[Obj]],
) -> None:
    security = pytest.importorskip("mlflow.server.security_utils")
    hosts = mlflow_allowed_hosts(scenarios["with-ingress"])
    svc = "kt-kubetrain-mlflow"
    for host in (
        svc,
        f"{svc}:5000",
        f"{svc}.{NS}",
        f"{svc}.{NS}.svc:5000",
        f"{svc}.{NS}.svc.cluster.local:5000",
        "localhost:5000",
        "127.0.0.1:15000",
        "mlflow.kubetrain.example.com",
    ):
        assert security.is_allowed_host_header(hosts, host), host
    for host in ("evil.example.com", f"{svc}.other-ns.svc:5000", "10.0.0.8:5000"):
        assert not security.is_allowed_host_header(hosts, host), host
    assert "mlflow.kubetrain.example.com" not in mlflow_allowed_hosts(scenarios["default"])


def test_mlflow_command_store_and_volume(scenarios: dict[str, list[Obj]]) -> None:
    objs = scenarios["default"]
    dep = one(objs, "Deployment", "mlflow")
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = pod_spec(dep)["containers"]
    assert c["command"][:2] == ["mlflow", "server"]
    assert c["command"][c["command"].index("--host") + 1] == "0.0.0.0"
    env = env_of(c)
    assert env["MLFLOW_BACKEND_STORE_URI"] == "sqlite:////mlflow/mlflow.db"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "/mlflow/artifacts"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    pvc = one(objs, "PersistentVolumeClaim", "mlflow")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    data = next(v for v in pod_spec(dep)["volumes"] if v["name"] == "data")
    assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_mlflow_external_database_uri_comes_from_a_secret() -> None:
    objs = render(
        sets=(
            "mlflow.backendStore.existingSecret=mlflow-db",
            "mlflow.backendStore.existingSecretKey=url",
        )
    )
    (c,) = pod_spec(one(objs, "Deployment", "mlflow"))["containers"]
    assert env_of(c)["MLFLOW_BACKEND_STORE_URI"] == {
        "secretKeyRef": {"name": "mlflow-db", "key": "url"}
    }


def test_mlflow_ingress(scenarios: dict[str, list[Obj]]) -> None:
    ing = one(scenarios["with-ingress"], "Ingress", "mlflow")
    assert ing["spec"]["ingressClassName"] == "nginx"
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "mlflow.kubetrain.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "kt-kubetrain-mlflow", "port": {"name": "http"}}
    assert ing["spec"]["tls"] == [
        {"hosts": ["mlflow.kubetrain.example.com"], "secretName": "mlflow-tls"}
    ]
    assert "host is required" in render_fails("mlflow.ingress.enabled=true")


def test_external_endpoints_and_all_off_render_no_bundled_services(
    scenarios: dict[str, list[Obj]],
) -> None:
    for scenario in ("external-endpoints", "all-off", "manifests"):
        components = {
            o["metadata"]["labels"].get("app.kubernetes.io/component") for o in scenarios[scenario]
        }
        assert not components & {"minio", "mlflow"}, scenario
    assert {o["kind"] for o in scenarios["all-off"]} == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "ClusterKopfPeering",
    }


def test_bundled_minio_posts_notifications_to_the_operator_webhook(
    scenarios: dict[str, list[Obj]],
) -> None:
    settings_mod = pytest.importorskip("kubetrain_operator.settings")
    objs = scenarios["default"]
    (minio,) = pod_spec(one(objs, "StatefulSet", "minio"))["containers"]
    env = env_of(minio)
    target = {
        k.removeprefix("MINIO_NOTIFY_WEBHOOK_ENABLE_")
        for k in env
        if k.startswith("MINIO_NOTIFY_WEBHOOK_ENABLE_")
    }
    # The target id is the one in the ARN the operator subscribes buckets to.
    assert target == {settings_mod.OperatorSettings().webhook_arn.split(":")[4]} == {"KUBETRAIN"}
    assert env["MINIO_NOTIFY_WEBHOOK_ENABLE_KUBETRAIN"] == "on"
    assert (
        env["MINIO_NOTIFY_WEBHOOK_ENDPOINT_KUBETRAIN"]
        == f"http://kt-kubetrain-webhook.{NS}.svc:8081/minio/events"
    )
    assert not [k for k in env if k.startswith("MINIO_NOTIFY_WEBHOOK_QUEUE_DIR")], (
        "no queue: immediate delivery"
    )
    svc = one(objs, "Service", "webhook")
    assert svc["metadata"]["name"] == "kt-kubetrain-webhook"
    assert svc["spec"]["ports"] == [
        {"name": "webhook", "port": 8081, "targetPort": "webhook", "protocol": "TCP"}
    ]
    operator = one(objs, "Deployment", "operator")
    assert (
        svc["spec"]["selector"].items()
        <= operator["spec"]["template"]["metadata"]["labels"].items()
    )
    (op,) = pod_spec(operator)["containers"]
    ref = {"secretKeyRef": {"name": "kt-kubetrain-webhook", "key": "token"}}
    assert env_of(op)["KUBETRAIN_OPERATOR_WEBHOOK_TOKEN"] == ref
    assert env["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_KUBETRAIN"] == ref
    secret = one(objs, "Secret", "webhook")
    assert list(secret["data"]) == ["token"] and len(secret["data"]["token"]) >= 64


def test_webhook_with_external_minio_existing_secret_and_off(
    scenarios: dict[str, list[Obj]],
) -> None:
    objs = scenarios["external-endpoints"]
    assert one(objs, "Service", "webhook") and one(objs, "Secret", "webhook")
    objs = render(
        sets=("operator.webhook.token.existingSecret=hook", "operator.webhook.token.key=t")
    )
    assert "kt-kubetrain-webhook" not in {o["metadata"]["name"] for o in by_kind(objs, "Secret")}
    (minio,) = pod_spec(one(objs, "StatefulSet", "minio"))["containers"]
    assert env_of(minio)["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_KUBETRAIN"] == {
        "secretKeyRef": {"name": "hook", "key": "t"}
    }
    (c,) = pod_spec(one(scenarios["manifests"], "Deployment", "operator"))["containers"]
    assert env_of(c)["KUBETRAIN_OPERATOR_WEBHOOK_TOKEN"] == {
        "secretKeyRef": {"name": "kubetrain-webhook", "key": "token", "optional": True}
    }
    objs = scenarios["all-off"]
    (c,) = pod_spec(one(objs, "Deployment", "operator"))["containers"]
    assert "KUBETRAIN_OPERATOR_WEBHOOK_TOKEN" not in env_of(c)
    assert {p["name"] for p in c["ports"]} == {"health", "metrics"}


# ------------------------------------------------------------------------------ NetworkPolicy, test pod, watches


def test_network_policies_select_chart_pods_and_named_ports(
    scenarios: dict[str, list[Obj]],
) -> None:
    objs = scenarios["with-ingress"]
    policies = by_kind(objs, "NetworkPolicy")
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in policies} == {
        "operator",
        "minio",
        "mlflow",
    }
    workloads = [o for o in objs if o["kind"] in {"Deployment", "StatefulSet"}]
    for pol in policies:
        selector = pol["spec"]["podSelector"]["matchLabels"]
        (target,) = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        port_names = {p["name"] for c in containers(target) for p in c.get("ports", [])}
        for rule in pol["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["port"] in port_names, (
                    f"{pol['metadata']['name']}: no port {port['port']}"
                )
    op = next(
        p for p in policies if p["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    )
    assert op["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {p["port"] for rule in op["spec"]["egress"] for p in rule["ports"]}
    assert {53, 443, 6443, 9000} <= egress_ports
    assert not by_kind(scenarios["default"], "NetworkPolicy")


def test_helm_test_pod_checks_every_enabled_endpoint(scenarios: dict[str, list[Obj]]) -> None:
    pod = one(scenarios["default"], "Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (c,) = pod["spec"]["containers"]
    assert c["command"][:2] == ["python3", "-c"]
    urls = c["command"][3:]
    assert urls == [
        f"http://kt-kubetrain-metrics.{NS}.svc:9090/metrics",
        f"http://kt-kubetrain-minio.{NS}.svc:9000/minio/health/live",
        f"http://kt-kubetrain-mlflow.{NS}.svc:5000/health",
    ]
    compile(c["command"][2], "helm-test", "exec")  # the inline script is valid Python
    (c,) = one(scenarios["external-endpoints"], "Pod", "test")["spec"]["containers"]
    assert c["command"][3:] == [f"http://kt-kubetrain-metrics.{NS}.svc:9090/metrics"]
    assert not by_kind(scenarios["all-off"], "Pod")


def test_declared_dataset_watch_gets_bundled_minio_defaults(
    scenarios: dict[str, list[Obj]],
) -> None:
    dsw = one(scenarios["with-ingress"], "DatasetWatch")
    assert dsw["apiVersion"] == "kubetrain.dev/v1alpha1"
    assert dsw["metadata"] == dsw["metadata"] | {"name": "mnist", "namespace": NS}
    source = dsw["spec"]["source"]
    assert source["endpoint"] == f"http://kt-kubetrain-minio.{NS}.svc:9000"
    assert source["credentialsSecretRef"] == {"name": "kt-kubetrain-minio"}
    assert source["bucket"] == "mnist" and source["prefix"] == "dataset/"
    # An explicit endpoint/secret is kept.
    objs = render(
        sets=(
            "datasetWatches[0].name=w",
            "datasetWatches[0].spec.source.endpoint=http://s3.example:9000",
            "datasetWatches[0].spec.source.credentialsSecretRef.name=mine",
        )
    )
    source = one(objs, "DatasetWatch")["spec"]["source"]
    assert (
        source["endpoint"] == "http://s3.example:9000"
        and source["credentialsSecretRef"]["name"] == "mine"
    )


# ------------------------------------------------------------------------------ schema, NOTES, package


@pytest.mark.parametrize(("assignment", "mentions"), BAD_VALUES)
def test_schema_rejects_bad_values_naming_them(assignment: str, mentions: str) -> None:
    message = render_fails(assignment)
    assert "schema" in message.lower() or "values" in message.lower(), message
    assert mentions in message, message


def test_notes_render_next_steps() -> None:
    assert HELM is not None
    proc = subprocess.run(
        [str(HELM), "install", RELEASE, str(CHART), "--namespace", NS, "--dry-run=client"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout[proc.stdout.index("NOTES:") :]
    for expected in (
        "kubectl apply -n kt-test -f manifests/examples/datasetwatch-mnist.yaml",
        "kubetrain-data upload dataset s3://mnist/dataset/ --create-bucket",
        "curl -s http://<ingress host>/predict",
        "kt-kubetrain-minio",
        "helm test kt -n kt-test",
    ):
        assert expected in notes, expected


def test_package_ships_ci_crds_readme_and_schema_but_no_editor_litter(tmp_path: Path) -> None:
    """`helm package` honours .helmignore: VCS, editor and backup files stay out; the
    scenarios, CRDs, README and schema are in the archive."""
    assert HELM is not None
    chart = tmp_path / "kubetrain"
    shutil.copytree(CHART, chart)
    litter = [
        ".git/HEAD",
        "values.yaml.swp",
        "values.yaml~",
        "templates/rbac.yaml.orig",
        ".vscode/x",
    ]
    for name in litter:
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text("litter\n")
    proc = subprocess.run(
        [str(HELM), "package", str(chart), "--destination", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("kubetrain-*.tgz")
    with tarfile.open(archive) as tar:
        names = {n.removeprefix("kubetrain/") for n in tar.getnames()}
    for name in litter:
        assert name not in names, name
    expected = {"Chart.yaml", "values.yaml", "values.schema.json", "README.md", ".helmignore"}
    expected |= {f"ci/{p.name}" for p in CI.glob("*.yaml")}
    expected |= {f"crds/{p.name}" for p in (CHART / "crds").glob("*.yaml")}
    assert expected <= names, expected - names


# ------------------------------------------------------------------------------ manifests/ drift


def test_manifests_match_the_chart() -> None:
    assert HELM is not None
    expected = gen_manifests.build(gen_manifests.render_chart(HELM))
    actual = gen_manifests.current_files(MANIFESTS)
    delta = gen_manifests.diff(expected, actual)
    assert not delta, (
        "manifests/ is out of date with charts/kubetrain; run "
        f"`.venv/bin/python tools/harness/gen_manifests.py`:\n{delta[:4000]}"
    )


def test_check_mode_detects_drift(tmp_path: Path) -> None:
    """`gen_manifests --check` fails on a hand edit and passes on a fresh rendering."""
    out = tmp_path / "manifests"
    assert gen_manifests.main(["--out", str(out)]) == 0
    assert gen_manifests.main(["--check", "--out", str(out)]) == 0
    edited = out / "30-operator.yaml"
    edited.write_text(edited.read_text().replace("replicas: 1", "replicas: 3"))
    assert gen_manifests.main(["--check", "--out", str(out)]) == 1
    (out / "99-stray.yaml").write_text("# not from the chart\n")
    assert gen_manifests.main(["--out", str(out)]) == 0
    assert not (out / "99-stray.yaml").exists()
    assert gen_manifests.main(["--check", "--out", str(out)]) == 0


def test_chart_renders_with_what_skaffold_would_set() -> None:
    """Substitute plausible skaffold outputs; the built images must land in the pod spec and in
    the operator's default training image."""
    helm = gen_manifests.find_helm()
    if helm is None:
        pytest.fail("helm binary not built: run `make binaries` (tools/harness/platform/build.sh)")
    fake = {
        "kubetrain-operator:REPO": "registry.example/kt/kubetrain-operator",
        "kubetrain-operator:TAG": "abc1234",
        "kubetrain-operator:DIGEST": "sha256:" + "1" * 64,
        "kubetrain-trainer:REPO": "registry.example/kt/kubetrain-trainer",
        "kubetrain-trainer:TAG": "abc1234",
        "kubetrain-trainer:DIGEST": "sha256:" + "2" * 64,
    }
    sets = [f"{k}={fake[v]}" for k, v in template_keys(release()["setValueTemplates"]).items()]
    remote = next(p for p in SKAFFOLD["profiles"] if p["name"] == "remote")
    for patch in remote["patches"]:
        key = patch["path"].rsplit("/", 1)[1]
        if patch["path"].startswith("/deploy/helm/releases/0/setValueTemplates/"):
            sets.append(f"{key}={fake[template_keys({key: patch['value']})[key]]}")
        elif patch["path"] == "/deploy/helm/releases/0/setValues":
            sets += [f"{k}={v}" for k, v in patch["value"].items()]
    objs = gen_manifests.load_objects(
        gen_manifests.helm_template(
            helm, release="kubetrain", namespace="kubetrain", sets=sets, include_crds=False
        )
    )
    dep = next(
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
    )
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"registry.example/kt/kubetrain-operator@sha256:{'1' * 64}"
    assert c["imagePullPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert (
        env["KUBETRAIN_OPERATOR_DEFAULT_IMAGE"]
        == f"registry.example/kt/kubetrain-trainer@sha256:{'2' * 64}"
    )
