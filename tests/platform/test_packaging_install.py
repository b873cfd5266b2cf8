"""The chart and manifests against the real local apiserver.

- every ci/ scenario and manifests/ (+ examples) pass a server-side dry run (full OpenAPI,
  CRD schema and CEL validation, strict field validation, admission);
- a real `helm install` (cluster scope), then `helm upgrade` to namespace scope and
  `helm uninstall`, checking the objects, the CRD, PodSecurity "restricted" admission of the
  pods the controllers create, and SubjectAccessReviews of the operator's ServiceAccount;
- a namespace-scoped install serving two namespaces, proving nothing outside them;
- the real operator process run with the ServiceAccount's own token, proving the granted RBAC
  is also sufficient (no 403 anywhere) for watching a DatasetWatch.

The CRDs are cluster-scoped and shared with tests running in parallel: they are applied with
server-side apply (idempotent), never deleted. Cluster-scoped objects of a release carry the
test namespace in their names, so parallel installs never collide.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import gen_manifests
import pytest
import yaml
from kubetrain_platform.platform import free_port

from tests.support.wait import wait_for

pytestmark = pytest.mark.platform

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubetrain"
CI = CHART / "ci"
SCENARIOS = sorted(p.stem.removesuffix("-values") for p in CI.glob("*-values.yaml"))
RELEASE = "kt"
SA = "kt-kubetrain-operator"
Obj = dict[str, Any]


# ------------------------------------------------------------------------------ helpers


def run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


class Tools:
    """kubectl and helm of the platform, pointed at its kubeconfig."""

    def __init__(self, platform: Any) -> None:
        self.kubeconfig = platform.kubeconfig
        self.kubectl_bin = platform.tool("kubectl")
        self.helm_bin = platform.tool("helm")
        self.env = {
            **os.environ,
            "KUBECONFIG": self.kubeconfig,
            "HELM_CACHE_HOME": str(Path(platform.state_dir) / "helm-cache"),
        }

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [self.kubectl_bin, "--kubeconfig", self.kubeconfig, *args], stdin=stdin, check=check
        )

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.helm_bin, *args], env=self.env, check=check)

    def render(self, namespace: str, *values: Path, sets: tuple[str, ...] = ()) -> list[Obj]:
        text = gen_manifests.helm_template(
            Path(self.helm_bin),
            release=RELEASE,
            namespace=namespace,
            values=values,
            sets=sets,
            include_crds=False,
            chart=CHART,
        )
        return gen_manifests.load_objects(text)


@pytest.fixture(scope="module")
def tools(platform: Any) -> Tools:
    return Tools(platform)


@pytest.fixture(scope="module")
def crds(tools: Tools, kube: Any) -> list[str]:
    """Apply the chart's CRDs (idempotent, shared) and wait until each is Established."""
    names = []
    for path in sorted((CHART / "crds").glob("*.yaml")):
        tools.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=kubetrain-tests",
            "-f",
            str(path),
        )
        names += [d["metadata"]["name"] for d in yaml.safe_load_all(path.read_text()) if d]
    for name in names:
        tools.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return names


def sar(
    kube: Any,
    sa_namespace: str,
    verb: str,
    resource: str,
    *,
    namespace: str | None,
    group: str = "",
    name: str | None = None,
) -> bool:
    """Would the operator's ServiceAccount be allowed this request? (the real authorizer)"""
    from kubernetes import client

    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{sa_namespace}:{SA}",
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{sa_namespace}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=group, resource=resource, name=name
            ),
        )
    )
    result = client.AuthorizationV1Api(kube).create_subject_access_review(review)
    assert result.status is not None
    return bool(result.status.allowed)


@contextlib.contextmanager
def extra_namespace(kube: Any, labels: dict[str, str] | None = None) -> Iterator[str]:
    from kubernetes import client

    core = client.CoreV1Api(kube)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    try:
        yield name
    finally:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name, propagation_policy="Background")


def restrict(kube: Any, namespace: str) -> None:
    """Enforce PodSecurity "restricted" on the namespace (pods violating it are rejected)."""
    from kubernetes import client

    client.CoreV1Api(kube).patch_namespace(
        namespace,
        {
            "metadata": {
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                }
            }
        },
    )


def served_kinds(tools: Tools) -> set[str]:
    """Kinds the apiserver serves (`kubectl api-resources -o wide`: KIND follows NAMESPACED)."""
    kinds = set()
    for line in tools.kubectl("api-resources", "-o", "wide", "--no-headers").stdout.splitlines():
        words = line.split()
        for i, word in enumerate(words[:-1]):
            if word in ("true", "false"):
                kinds.add(words[i + 1])
                break
    return kinds


def dry_run(tools: Tools, objs: list[Obj], namespace: str) -> subprocess.CompletedProcess[str]:
    stream = yaml.safe_dump_all(objs, sort_keys=False)
    return tools.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=kubetrain-dry-run",
        "--force-conflicts",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=stream,
        check=False,
    )


# ------------------------------------------------------------------------------ dry runs


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes_server_side_dry_run(
    tools: Tools, crds: list[str], namespace: str, scenario: str
) -> None:
    objs = tools.render(namespace, CI / f"{scenario}-values.yaml")
    served = served_kinds(tools)
    unserved = sorted({o["kind"] for o in objs} - served)
    # Only the Prometheus Operator's ServiceMonitor may be missing from a bare control plane;
    # its fields are checked in tests/platform/test_packaging_chart_render.py (helm template).
    assert set(unserved) <= {"ServiceMonitor"}, unserved
    objs = [o for o in objs if o["kind"] in served]
    proc = dry_run(tools, objs, namespace)
    assert proc.returncode == 0, f"{scenario}:\n{proc.stderr}"
    applied = [ln for ln in proc.stdout.splitlines() if "serverside-applied (server dry run)" in ln]
    assert len(applied) == len(objs), proc.stdout
    assert "Warning" not in proc.stderr, proc.stderr


def test_manifests_and_examples_pass_server_side_dry_run(
    tools: Tools, crds: list[str], namespace: str
) -> None:
    # A dry run creates nothing, so the namespaced objects cannot land in the (dry-run) created
    # "kubetrain" namespace: they are checked in the test's namespace instead, with the
    # ClusterRoleBinding's subject moved along. Everything else is applied as written.
    objs: list[Obj] = []
    for path in sorted((REPO / "manifests").glob("*.yaml")):
        objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for obj in objs:
        if obj["metadata"].get("namespace") == "kubetrain":
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            if subject.get("namespace") == "kubetrain":
                subject["namespace"] = namespace
    proc = dry_run(tools, objs, namespace)
    assert proc.returncode == 0, proc.stderr
    kinds = {ln.split("/")[0] for ln in proc.stdout.splitlines()}
    assert {
        "namespace",
        "customresourcedefinition.apiextensions.k8s.io",
        "deployment.apps",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterkopfpeering.kopf.dev",
        "serviceaccount",
    } <= kinds, proc.stdout
    assert len(proc.stdout.splitlines()) == len(objs), proc.stdout
    proc = tools.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=kubetrain-dry-run",
        "--force-conflicts",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        str(REPO / "manifests" / "examples"),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "datasetwatch.kubetrain.dev/mnist serverside-applied" in proc.stdout, proc.stdout


def test_crd_rejects_a_bad_dataset_watch_with_a_readable_message(
    tools: Tools, crds: list[str], namespace: str
) -> None:
    example = next(
        d
        for d in yaml.safe_load_all(
            (REPO / "manifests" / "examples" / "datasetwatch-mnist.yaml").read_text()
        )
        if d and d["kind"] == "DatasetWatch"
    )
    example["spec"]["trigger"]["threshold"] = 0
    proc = dry_run(tools, [example], namespace)
    assert proc.returncode != 0
    assert "threshold" in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------ real installs


def established(kube: Any, name: str) -> bool:
    from kubernetes import client

    crd = client.ApiextensionsV1Api(kube).read_custom_resource_definition(name)
    conditions = crd.status.conditions if crd.status else None
    return any(c.type == "Established" and c.status == "True" for c in conditions or [])


def exists(tools: Tools, kind: str, name: str, namespace: str | None = None) -> bool:
    args = ["get", kind, name, "-o", "name"]
    if namespace:
        args += ["-n", namespace]
    return tools.kubectl(*args, check=False).returncode == 0


def check_restricted_admission(tools: Tools, namespace: str) -> None:
    """Every pod template of the installed release passes PodSecurity "restricted" (enforced
    on the namespace), while a pod running as root is rejected there (the control)."""
    listing = json.loads(
        tools.kubectl(
            "get",
            "deployments,statefulsets",
            "-n",
            namespace,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "json",
        ).stdout
    )
    assert len(listing["items"]) == 3, [i["metadata"]["name"] for i in listing["items"]]
    for item in listing["items"]:
        spec = item["spec"]["template"]["spec"]
        for claim in item["spec"].get("volumeClaimTemplates", []):  # as the StatefulSet adds them
            pvc = f"{claim['metadata']['name']}-{item['metadata']['name']}-0"
            spec.setdefault("volumes", []).append(
                {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": pvc}}
            )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"psa-{item['metadata']['name']}", "namespace": namespace},
            "spec": spec,
        }
        proc = tools.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod), check=False
        )
        assert proc.returncode == 0 and "Warning" not in proc.stderr, (
            f"{item['metadata']['name']}: {proc.stderr}"
        )
    root = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa-root", "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "command": ["true"],
                    "securityContext": {"runAsUser": 0},
                }
            ]
        },
    }
    proc = tools.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(root), check=False
    )
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr


def absent(tools: Tools, kind: str, name: str, namespace: str | None = None) -> bool:
    return not exists(tools, kind, name, namespace)


def pods_of(kube: Any, namespace: str, component: str) -> list[Any]:
    from kubernetes import client

    return (
        client.CoreV1Api(kube)
        .list_namespaced_pod(
            namespace,
            label_selector=f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}",
        )
        .items
    )


def test_install_upgrade_uninstall_cluster_scope(
    tools: Tools, kube: Any, crds: list[str], namespace: str
) -> None:
    restrict(kube, namespace)
    peering = f"kt-{namespace}"
    cluster_name = f"{namespace}-kt-kubetrain"
    tools.helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--set",
        f"operator.peering.name={peering}",
        # No operator process: should a node run pods, a cluster-wide operator from this
        # test must not act on other tests' DatasetWatches.
        "--set",
        "operator.replicas=0",
        "--timeout",
        "2m",
    )

    # The CRDs are there and served.
    for name in (
        "datasetwatches.kubetrain.dev",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    ):
        assert established(kube, name), name
    # Everything the default values enable exists.
    for kind, name, ns in [
        ("serviceaccount", SA, namespace),
        ("deployment", "kt-kubetrain-operator", namespace),
        ("service", "kt-kubetrain-metrics", namespace),
        ("clusterrole", cluster_name, None),
        ("clusterrolebinding", cluster_name, None),
        ("clusterkopfpeering", peering, None),
        ("statefulset", "kt-kubetrain-minio", namespace),
        ("service", "kt-kubetrain-minio", namespace),
        ("secret", "kt-kubetrain-minio", namespace),
        ("deployment", "kt-kubetrain-mlflow", namespace),
        ("service", "kt-kubetrain-mlflow", namespace),
        ("persistentvolumeclaim", "kt-kubetrain-mlflow", namespace),
    ]:
        assert exists(tools, kind, name, ns), f"{kind}/{name} missing"
    # PodSecurity "restricted" admits every pod the release's workloads create: the MLflow
    # pod the Deployment controller made, and (server-side dry run) each pod template.
    (pod,) = wait_for(
        functools.partial(pods_of, kube, namespace, "mlflow"), 60, "mlflow pod", interval=0.5
    )
    assert pod.spec.security_context.run_as_non_root is True
    check_restricted_admission(tools, namespace)
    # The ServiceAccount can do its job in any namespace, and nothing more.
    with extra_namespace(kube) as other:
        for ns in (namespace, other):
            for verb, group, resource in [
                ("create", "batch", "jobs"),
                ("create", "apps", "deployments"),
                ("create", "", "services"),
                ("patch", "kubetrain.dev", "datasetwatches/status"),
                ("create", "networking.k8s.io", "ingresses"),
            ]:
                assert sar(kube, namespace, verb, resource, namespace=ns, group=group), (
                    f"{verb} {resource} in {ns}"
                )
            assert sar(
                kube, namespace, "get", "secrets", namespace=ns, name="mnist-minio-credentials"
            )
            assert not sar(kube, namespace, "get", "secrets", namespace=ns, name="unrelated-secret")
            assert not sar(kube, namespace, "list", "secrets", namespace=ns)
            assert not sar(kube, namespace, "create", "pods", namespace=ns)
            assert not sar(
                kube, namespace, "get", "configmaps", namespace=ns, name="kube-root-ca.crt"
            )
        assert sar(
            kube, namespace, "get", "secrets", namespace=namespace, name="kt-kubetrain-minio"
        )
        assert sar(
            kube,
            namespace,
            "patch",
            "clusterkopfpeerings",
            namespace=None,
            group="kopf.dev",
            name=peering,
        )
        assert not sar(
            kube,
            namespace,
            "list",
            "customresourcedefinitions",
            namespace=None,
            group="apiextensions.k8s.io",
        )
        assert not sar(kube, namespace, "list", "namespaces", namespace=None)
        assert not sar(
            kube,
            namespace,
            "create",
            "clusterrolebindings",
            namespace=None,
            group="rbac.authorization.k8s.io",
        )

    # Upgrade to namespace scope: the cluster-wide grant and peering go away, a Role replaces them.
    tools.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--reuse-values",
        "--set",
        "watch.scope=namespaced",
        "--timeout",
        "2m",
    )
    status = json.loads(tools.helm("status", RELEASE, "-n", namespace, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    assert not exists(tools, "clusterrole", cluster_name)
    assert not exists(tools, "clusterrolebinding", cluster_name)
    assert not exists(tools, "clusterkopfpeering", peering)
    assert exists(tools, "role", "kt-kubetrain-operator", namespace)
    assert exists(tools, "kopfpeering", peering, namespace)
    dep = json.loads(
        tools.kubectl(
            "get", "deployment", "kt-kubetrain-operator", "-n", namespace, "-o", "json"
        ).stdout
    )
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"] == ["--namespace", namespace]
    assert sar(kube, namespace, "create", "jobs", namespace=namespace, group="batch")
    assert not sar(kube, namespace, "create", "jobs", namespace="default", group="batch")
    assert not sar(
        kube, namespace, "get", "secrets", namespace="default", name="mnist-minio-credentials"
    )

    # Uninstall: the release's objects go, the CRDs stay (and so do the data-bearing objects
    # marked helm.sh/resource-policy=keep).
    tools.helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "2m")
    assert tools.helm("status", RELEASE, "-n", namespace, check=False).returncode != 0
    for kind, name in [
        ("deployment", "kt-kubetrain-operator"),
        ("role", "kt-kubetrain-operator"),
        ("serviceaccount", SA),
        ("statefulset", "kt-kubetrain-minio"),
        ("deployment", "kt-kubetrain-mlflow"),
    ]:
        gone = functools.partial(absent, tools, kind, name, namespace)
        assert wait_for(gone, 60, f"{kind}/{name} gone", interval=0.5), name
    for name in crds:
        assert established(kube, name), f"CRD {name} must survive uninstall"
    assert exists(tools, "secret", "kt-kubetrain-minio", namespace), "kept: MinIO credentials"
    assert exists(tools, "persistentvolumeclaim", "kt-kubetrain-mlflow", namespace), (
        "kept: MLflow data"
    )


def test_namespaced_install_acts_only_in_its_namespaces(
    tools: Tools, kube: Any, crds: list[str], namespace: str
) -> None:
    from kubernetes import client

    with extra_namespace(kube) as second, extra_namespace(kube) as outside:
        tools.helm(
            "install",
            RELEASE,
            str(CHART),
            "-n",
            namespace,
            "--timeout",
            "2m",
            "--values",
            str(CI / "namespaced-values.yaml"),
            "--set",
            f"watch.namespaces={{{namespace},{second}}}",
            "--set",
            "minio.enabled=false",
            "--set",
            "mlflow.enabled=false",
            "--set",
            "operator.replicas=0",
        )
        try:
            for ns in (namespace, second):
                assert exists(tools, "role", "kt-kubetrain-operator", ns)
                assert exists(tools, "kopfpeering", "kubetrain", ns)
                assert sar(kube, namespace, "create", "jobs", namespace=ns, group="batch")
                assert sar(
                    kube, namespace, "watch", "datasetwatches", namespace=ns, group="kubetrain.dev"
                )
                assert sar(
                    kube, namespace, "get", "secrets", namespace=ns, name="mnist-minio-credentials"
                )
                assert not sar(
                    kube, namespace, "get", "secrets", namespace=ns, name="unrelated-secret"
                )
            for verb, group, resource in [
                ("create", "batch", "jobs"),
                ("create", "apps", "deployments"),
                ("create", "", "services"),
                ("list", "kubetrain.dev", "datasetwatches"),
                ("get", "", "secrets"),
            ]:
                assert not sar(
                    kube,
                    namespace,
                    verb,
                    resource,
                    namespace=outside,
                    group=group,
                    name="mnist-minio-credentials" if resource == "secrets" else None,
                ), f"{verb} {resource} outside"
                assert not sar(kube, namespace, verb, resource, namespace=None, group=group), (
                    f"{verb} {resource} cluster-wide"
                )
            # Not a single cluster-scoped grant names this ServiceAccount.
            bindings = client.RbacAuthorizationV1Api(kube).list_cluster_role_binding().items
            subjects = [(s.namespace, s.name) for b in bindings for s in (b.subjects or [])]
            assert (namespace, SA) not in subjects
        finally:
            tools.helm(
                "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "2m", check=False
            )


# ------------------------------------------------------------------------------ the operator under its own RBAC


def sa_kubeconfig(kube: Any, platform: Any, namespace: str, path: Path) -> Path:
    """A kubeconfig authenticating as the operator's ServiceAccount (TokenRequest API)."""
    from kubernetes import client

    request = client.CoreV1Api(kube).create_namespaced_service_account_token(
        SA,
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    )
    assert request.status is not None
    token = request.status.token
    admin = yaml.safe_load(Path(platform.kubeconfig).read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        ca = Path(cluster["certificate-authority"])
        if not ca.is_absolute():
            ca = Path(platform.kubeconfig).parent / ca
        cluster = {
            "server": cluster["server"],
            "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
        }
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "sa",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "sa",
                        "context": {"cluster": "c", "user": "sa", "namespace": namespace},
                    }
                ],
            }
        )
    )
    path.chmod(0o600)
    return path


def deployment_process(tools: Tools, kube: Any, namespace: str) -> tuple[list[str], dict[str, str]]:
    """args and env of the installed operator Deployment, secretKeyRefs read as admin."""
    from kubernetes import client

    objs = gen_manifests.load_objects(
        tools.helm("get", "manifest", RELEASE, "-n", namespace).stdout
    )
    dep = next(
        o
        for o in objs
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "kt-kubetrain-operator"
    )
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kubetrain-operator"]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            secret = client.CoreV1Api(kube).read_namespaced_secret(ref["name"], namespace)
            env[item["name"]] = base64.b64decode((secret.data or {})[ref["key"]]).decode()
    return list(container["args"]), env


def dataset_watch(namespace: str, platform: Any, bucket: str) -> Obj:
    doc = next(
        d
        for d in yaml.safe_load_all(
            (REPO / "manifests" / "examples" / "datasetwatch-mnist.yaml").read_text()
        )
        if d and d["kind"] == "DatasetWatch"
    )
    doc["metadata"]["namespace"] = namespace
    doc["spec"]["source"]["endpoint"] = platform.minio_endpoint
    doc["spec"]["source"]["bucket"] = bucket
    doc["spec"]["trigger"]["initialTraining"] = False
    # The RBAC question does not depend on the transport; the test platform's MinIO has no
    # webhook target configured, so use its listen stream.
    doc["spec"]["detection"]["notifications"] = "Listen"
    return doc


@pytest.mark.parametrize("scope", ["namespaced", "cluster"])
def test_operator_runs_under_the_charts_rbac_without_a_single_403(
    tools: Tools,
    kube: Any,
    platform: Any,
    crds: list[str],
    namespace: str,
    bucket: str,
    tmp_path: Path,
    scope: str,
) -> None:
    from kubernetes import client

    peering = f"kt-{namespace}"
    tools.helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--timeout",
        "2m",
        "--set",
        f"watch.scope={scope}",
        "--set",
        f"operator.peering.name={peering}",
        "--set",
        "minio.enabled=false",
        "--set",
        "mlflow.enabled=false",
        "--set",
        "operator.replicas=0",
    )
    proc: subprocess.Popen[bytes] | None = None
    log = tmp_path / "operator.log"
    try:
        core = client.CoreV1Api(kube)
        core.create_namespaced_secret(
            namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="mnist-minio-credentials"),
                string_data={
                    "accessKey": platform.minio_access_key,
                    "secretKey": platform.minio_secret_key,
                },
            ),
        )
        client.CustomObjectsApi(kube).create_namespaced_custom_object(
            "kubetrain.dev",
            "v1alpha1",
            namespace,
            "datasetwatches",
            dataset_watch(namespace, platform, bucket),
        )
        # The process exactly as the chart's Deployment defines it: its args and environment
        # (secretKeyRefs resolved), with free ports and the ServiceAccount's own token.
        args, chart_env = deployment_process(tools, kube, namespace)
        health, metrics_port, webhook_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            **chart_env,
            "KUBECONFIG": str(sa_kubeconfig(kube, platform, namespace, tmp_path / "sa.kubeconfig")),
            "POD_ID": f"test-{namespace}",
            "POD_NAMESPACE": namespace,
        }
        assert env["KUBETRAIN_OPERATOR_PEERING_NAME"] == peering
        assert env["KUBETRAIN_OPERATOR_WEBHOOK_TOKEN"], "the chart's generated webhook token"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kubetrain_operator.main",
                    *args,
                    "--health-port",
                    str(health),
                    "--metrics-port",
                    str(metrics_port),
                    "--webhook-port",
                    str(webhook_port),
                    "--log-level",
                    "DEBUG",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )

        def phase() -> str | None:
            assert proc is not None and proc.poll() is None, (
                f"operator exited:\n{log.read_text()[-3000:]}"
            )
            obj = client.CustomObjectsApi(kube).get_namespaced_custom_object(
                "kubetrain.dev", "v1alpha1", namespace, "datasetwatches", "mnist"
            )
            status = cast(dict[str, Any], obj).get("status") or {}
            return cast(str | None, status.get("phase"))

        assert wait_for(
            lambda: phase() == "Watching", 90, "the watch to reach Watching", interval=0.5
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=5) as rsp:
            assert rsp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as rsp:
            assert rsp.status == 200
        text = log.read_text()
        # An API 403 shows as reason "Forbidden" / "... is forbidden: User ..." (kubernetes
        # client and kopf alike), or "(403)"; kopf's RBAC fallbacks say "Not enough permissions".
        # (A bare "403" would also match the random peering priority printed at start.)
        denied = re.compile(
            r"Forbidden|forbidden|Not enough permissions|\(403\)|\b(?:status|code)[=: ]+403\b"
        )
        found = denied.search(text)
        assert found is None, f"{found.group(0)!r} in the operator log:\n{text[-3000:]}"
    finally:
        # Delete the watch while the operator still runs (it removes its finalizer), then stop
        # the process we started; a leftover finalizer is removed by hand so the namespace can go.
        api = client.CustomObjectsApi(kube)
        with contextlib.suppress(client.ApiException):
            api.delete_namespaced_custom_object(
                "kubetrain.dev", "v1alpha1", namespace, "datasetwatches", "mnist"
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                api.get_namespaced_custom_object(
                    "kubetrain.dev", "v1alpha1", namespace, "datasetwatches", "mnist"
                )
            except client.ApiException:
                break
            time.sleep(0.5)
        else:
            with contextlib.suppress(client.ApiException):
                api.patch_namespaced_custom_object(
                    "kubetrain.dev",
                    "v1alpha1",
                    namespace,
                    "datasetwatches",
                    "mnist",
                    {"metadata": {"finalizers": []}},
                )
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        tools.helm("uninstall", RELEASE, "-n", namespace, "--timeout", "2m", check=False)
