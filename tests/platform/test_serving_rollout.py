"""Serving rollout against the real apiserver, controller-manager, node and MinIO.

The serving pods run the scripted stub image on the real node (tests/support/stub.py):
its /readyz fails until the test tells a pod to pass, so the real kubelet's readiness
probe, ReplicaSet and Deployment controllers decide availability. A rollout that must fail
is left alone: with progressDeadlineSeconds=5 and no Ready pod, the real Deployment
controller reports ProgressDeadlineExceeded.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubetrain_contract import TrainResult
from kubetrain_operator.kube import Kube, KubeError
from kubetrain_operator.serving_rollout import apply
from kubetrain_operator.serving_rollout.errors import RolloutError
from kubetrain_operator.serving_rollout.observe import observe
from kubetrain_operator.serving_rollout.spec import parse_target
from kubetrain_operator.serving_rollout.state import ANN_BENTO_URI, RolloutState
from kubetrain_operator.settings import RolloutSettings

from tests.support.stub import StubWorkload
from tests.support.wait import wait_for

pytestmark = pytest.mark.platform


REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "charts" / "kubetrain" / "crds" / "datasetwatch.yaml"
SETTINGS = RolloutSettings(default_image="kubetrain-trainer:test")
BENTOS = ".kubetrain/bentos/"


def contains(big: Any, small: Any) -> bool:
    """`small` is `big` with some (defaulted) fields left out."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and contains(big[k], v) for k, v in small.items()
        )
    return bool(big == small)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def crd(kube: Any) -> None:
    """The real DatasetWatch CRD from the chart (the owner of every serving object)."""
    k = Kube(kube, timeout=30)
    name = "datasetwatches.kubetrain.dev"
    if CRD_FILE.exists():
        doc = yaml.safe_load(CRD_FILE.read_text())
        name = doc["metadata"]["name"]
        k.apply(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
            doc,
            "kubetrain-tests",
        )
    elif k.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") is None:
        raise RuntimeError(
            f"{CRD_FILE} is missing and the apiserver has no {name}: the DatasetWatch CRD "
            "is needed as the owner of the serving objects"
        )

    def established() -> bool:
        got = k.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}") or {}
        conds = (got.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

    wait_for(established, what="DatasetWatch CRD Established")


class Env:
    """One namespace with a credentials Secret and a DatasetWatch, plus helpers."""

    def __init__(
        self, kube: Any, platform: Any, namespace: str, bucket: str, stub: StubWorkload
    ) -> None:
        self.api = kube
        self.stub = stub
        self.k = Kube(kube, timeout=30)
        self.platform = platform
        self.ns = namespace
        self.bucket = bucket
        self.name = "digits"
        self.serving_name = "digits-serving"
        self.body: dict[str, Any] = {}

    # -- setup ------------------------------------------------------------------------
    def create_watch(self, serving: dict[str, Any]) -> None:
        self.k.request(
            "POST",
            f"/api/v1/namespaces/{self.ns}/secrets",
            body={
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "minio-creds"},
                "data": {
                    "accessKey": base64.b64encode(self.platform.minio_access_key.encode()).decode(),
                    "secretKey": base64.b64encode(self.platform.minio_secret_key.encode()).decode(),
                },
            },
        )
        spec = {
            "source": {
                "endpoint": self.platform.minio_endpoint,
                "bucket": self.bucket,
                "prefix": "",
                "credentialsSecretRef": {"name": "minio-creds"},
            },
            # The serving Deployment runs the training image (the stub's kubetrain-serve).
            "training": {"image": self.stub.image},
            # No operator acts on this watch (the tests call the rollout directly).
            "suspend": True,
            "serving": serving,
        }
        created = wait_for(
            lambda: self._try_create_watch(spec), what="DatasetWatch create (CRD served)"
        )
        # The rollout always gets the object as stored: the CRD's schema (defaults,
        # pruning) is part of what is tested.
        self.body = created
        assert contains(self.body["spec"].get("serving", {}), serving), (
            "the DatasetWatch CRD dropped spec.serving fields",
            self.body["spec"],
        )

    def _try_create_watch(self, spec: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.k.request(
                "POST",
                f"/apis/kubetrain.dev/v1alpha1/namespaces/{self.ns}/datasetwatches",
                body={
                    "apiVersion": "kubetrain.dev/v1alpha1",
                    "kind": "DatasetWatch",
                    "metadata": {"name": self.name},
                    "spec": spec,
                },
            )
        except KubeError as exc:
            if exc.status == 404:  # CRD just established; discovery not caught up yet
                return None
            raise

    def _watch_path(self) -> str:
        return f"/apis/kubetrain.dev/v1alpha1/namespaces/{self.ns}/datasetwatches/{self.name}"

    def set_serving(self, **changes: Any) -> None:
        """Edit spec.serving on the server (None removes a field), as a user would."""
        self.body = self.k.request(
            "PATCH",
            self._watch_path(),
            body={"spec": {"serving": changes}},
            content_type="application/merge-patch+json",
        )

    def _report(self, status: dict[str, Any] | None) -> dict[str, Any] | None:
        """Write the returned status.serving to the watch, as the operator does."""
        if status is not None:
            self.body = self.k.request(
                "PATCH",
                self._watch_path() + "/status",
                body={"status": {"serving": status}},
                content_type="application/merge-patch+json",
            )
            assert self.body["status"]["serving"]["conditions"] == status["conditions"]
        return status

    # -- actions under test -----------------------------------------------------------
    def promote(self, version: int, promoted: bool = True) -> dict[str, Any] | None:
        return self._report(
            apply.on_promoted(self.k, self.body, self.result(version, promoted), SETTINGS)
        )

    def check(self) -> dict[str, Any] | None:
        return self._report(apply.check(self.k, self.body, SETTINGS))

    def result(self, version: int, promoted: bool = True) -> TrainResult:
        return TrainResult(
            status="succeeded",
            reason="gate passed" if promoted else "accuracy below champion",
            modelName="mnist",
            modelVersion=str(version),
            promoted=promoted,
            bentoUri=self.uri(version) if promoted else "",
            accuracy=0.97,
        )

    def uri(self, version: int) -> str:
        return f"s3://{self.bucket}/{BENTOS}mnist-{version}.bento"

    # -- reads ------------------------------------------------------------------------
    def deployment(self) -> dict[str, Any] | None:
        return self.k.get(f"/apis/apps/v1/namespaces/{self.ns}/deployments/{self.serving_name}")

    def service(self) -> dict[str, Any] | None:
        return self.k.get(f"/api/v1/namespaces/{self.ns}/services/{self.serving_name}")

    def ingress(self) -> dict[str, Any] | None:
        return self.k.get(
            f"/apis/networking.k8s.io/v1/namespaces/{self.ns}/ingresses/{self.serving_name}"
        )

    def replicasets(self) -> list[dict[str, Any]]:
        return self.k.list_items(
            f"/apis/apps/v1/namespaces/{self.ns}/replicasets",
            f"app.kubernetes.io/instance={self.name}",
        )

    def replicaset_of(self, version: int) -> dict[str, Any] | None:
        for rs in self.replicasets():
            ann = rs["spec"]["template"]["metadata"].get("annotations") or {}
            if ann.get(ANN_BENTO_URI) == self.uri(version):
                return rs
        return None

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = self.k.request("GET", f"/api/v1/namespaces/{self.ns}/events").get("items") or []
        return [
            e
            for e in items
            if e["involvedObject"].get("kind") == "DatasetWatch"
            and (reason is None or e["reason"] == reason)
        ]

    def container(self) -> dict[str, Any]:
        dep = self.deployment()
        assert dep is not None
        return dep["spec"]["template"]["spec"]["containers"][0]

    # -- cues to the stub ----------------------------------------------------------------
    def make_pods_ready(self, version: int, count: int) -> None:
        """Let `count` pods of `version`'s ReplicaSet pass their readiness probe."""

        def pods() -> list[dict[str, Any]]:
            rs = self.replicaset_of(version)
            if rs is None:
                return []
            items = self.k.list_items(
                f"/api/v1/namespaces/{self.ns}/pods", f"app.kubernetes.io/instance={self.name}"
            )
            return [
                p
                for p in items
                if any(
                    r["uid"] == rs["metadata"]["uid"]
                    for r in p["metadata"].get("ownerReferences", [])
                )
                and not p["metadata"].get("deletionTimestamp")
            ]

        found = wait_for(
            lambda: (lambda ps: ps if len(ps) >= count else None)(pods()),
            what=f"{count} pods of v{version}",
        )
        self.stub.make_ready(self.ns, found[:count])

    def wait_complete(self, version: int) -> dict[str, Any]:
        def complete() -> dict[str, Any] | None:
            dep = self.deployment()
            assert dep is not None
            ok = observe(dep).complete and dep["spec"]["template"]["metadata"]["annotations"][
                ANN_BENTO_URI
            ] == self.uri(version)
            return dep if ok else None

        return wait_for(complete, what=f"Deployment rolled out to v{version}")

    # -- bucket -----------------------------------------------------------------------
    def upload(self, minio: Any, *names: str) -> None:
        for name in names:
            data = f"bento {name}".encode()
            minio.put_object(self.bucket, BENTOS + name, io.BytesIO(data), len(data))

    def bento_names(self, minio: Any) -> set[str]:
        return {
            o.object_name.removeprefix(BENTOS)
            for o in minio.list_objects(self.bucket, prefix=BENTOS, recursive=True)
        }


@pytest.fixture
def env(
    crd: None, kube: Any, platform: Any, namespace: str, bucket: str, stub: StubWorkload
) -> Iterator[Env]:
    yield Env(kube, platform, namespace, bucket, stub)


def our_writes(obj: dict[str, Any] | None) -> tuple[Any, ...]:
    """(generation, time of the operator's last apply): changes only when the rollout wrote.

    resourceVersion is no use here: the Deployment controller bumps it with every status
    update.
    """
    assert obj is not None
    meta = obj["metadata"]
    times = [
        f.get("time")
        for f in meta.get("managedFields") or []
        if f.get("manager") == SETTINGS.field_manager and f.get("operation") == "Apply"
    ]
    assert times, f"no Apply by {SETTINGS.field_manager} on {meta['name']}"
    ours = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith("kubetrain.dev/")
    }
    return (meta.get("generation"), tuple(times), ours)


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


# ------------------------------------------------------------------------------ tests


def test_promotion_creates_then_updates_serving_objects(env: Env) -> None:
    env.create_watch(
        {
            "replicas": 2,
            "port": 3000,
            "historyLimit": 5,
            "progressDeadlineSeconds": 300,
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "1Gi"},
            },
            "ingress": {
                "host": "digits.example.com",
                "path": "/mnist",
                "className": "nginx",
                "tlsSecretName": "digits-tls",
            },
        }
    )
    uid = env.body["metadata"]["uid"]
    status = env.promote(1)
    assert status is not None
    assert status["modelVersion"] == "1" and status["bentoUri"] == env.uri(1)
    assert status["url"] == "https://digits.example.com/mnist"
    assert status["phase"] == "Progressing" and status["previousBentoUri"] == ""

    dep = env.deployment()
    assert dep is not None
    meta, spec = dep["metadata"], dep["spec"]
    assert [(r["kind"], r["uid"], r["controller"]) for r in meta["ownerReferences"]] == [
        ("DatasetWatch", uid, True)
    ]
    assert meta["labels"]["app.kubernetes.io/name"] == "kubetrain-serving"
    assert meta["labels"]["app.kubernetes.io/instance"] == "digits"
    assert meta["labels"]["kubetrain.dev/watch"] == "digits"
    assert meta["annotations"]["kubetrain.dev/model-version"] == "1"
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert spec["progressDeadlineSeconds"] == 300 and spec["revisionHistoryLimit"] == 5
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    assert c["image"] == env.stub.image
    assert c["command"] == ["kubetrain-serve"]
    # kubetrain-serve's default host 0.0.0.0: the pod has its own network namespace.
    assert c["args"] == ["--bento", env.uri(1), "--port", "3000"]
    assert "POD_IP" not in {e["name"] for e in c["env"]}
    assert c["ports"][0]["name"] == "http" and c["ports"][0]["containerPort"] == 3000
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert c["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    env_vars = {e["name"]: e for e in c["env"]}
    assert env_vars["KUBETRAIN_BENTO_URI"]["value"] == env.uri(1)
    assert env_vars["BENTOML_DO_NOT_TRACK"]["value"] == "true"
    assert env_vars["MINIO_ENDPOINT"]["value"] == env.platform.minio_endpoint
    assert env_vars["MINIO_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "minio-creds",
        "key": "secretKey",
    }

    svc = env.service()
    assert svc is not None
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["clusterIP"]
    [port] = svc["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (80, "http")
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert svc["metadata"]["ownerReferences"][0]["uid"] == uid

    ing = env.ingress()
    assert ing is not None
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["digits.example.com"], "secretName": "digits-tls"}]
    [path] = ing["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/mnist", "Prefix")
    assert path["backend"]["service"] == {"name": "digits-serving", "port": {"name": "http"}}
    generation = dep["metadata"]["generation"]

    # A second promotion updates the same objects: new Bento, new version, a new rollout.
    status = env.promote(2)
    assert status is not None and status["modelVersion"] == "2"
    assert status["previousBentoUri"] == env.uri(1)
    dep = env.deployment()
    assert dep is not None
    assert dep["metadata"]["generation"] > generation
    assert dep["metadata"]["annotations"]["kubetrain.dev/model-version"] == "2"
    assert dep["metadata"]["annotations"]["kubetrain.dev/previous-bento-uri"] == env.uri(1)
    assert env.container()["args"][1] == env.uri(2)
    tmpl_ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert tmpl_ann["kubetrain.dev/bento-uri"] == env.uri(2)
    svc2 = env.service()
    assert svc2 is not None and svc2["metadata"]["uid"] == svc["metadata"]["uid"]
    # The Deployment controller starts a second ReplicaSet for the new template.
    wait_for(lambda: env.replicaset_of(2), what="a ReplicaSet for v2")
    assert env.replicaset_of(1) is not None

    # Replaying the same result (an operator restart) changes nothing.
    before = our_writes(env.deployment()), our_writes(env.service()), our_writes(env.ingress())
    time.sleep(1.1)  # managedFields times have a resolution of one second
    assert env.promote(2) is not None
    assert (
        our_writes(env.deployment()),
        our_writes(env.service()),
        our_writes(env.ingress()),
    ) == before
    assert len(env.events("RolloutStarted")) == 2

    # Dropping spec.serving.ingress and changing replicas is applied by the periodic check.
    env.set_serving(ingress=None, replicas=1)
    status = env.check()
    assert (
        status is not None and status["url"] == f"http://digits-serving.{env.ns}.svc.cluster.local"
    )
    assert env.ingress() is None
    dep = env.deployment()
    assert dep is not None and dep["spec"]["replicas"] == 1
    assert env.events("ServingReconfigured")
    # ... once: the next check finds nothing to do.
    settled = our_writes(dep), our_writes(env.service())
    time.sleep(1.1)
    env.check()
    assert (our_writes(env.deployment()), our_writes(env.service())) == settled
    assert len(env.events("ServingReconfigured")) == 1

    # A Deployment deleted by hand is re-created from status.serving by the next check.
    env.k.delete(f"/apis/apps/v1/namespaces/{env.ns}/deployments/{env.serving_name}")
    wait_for(lambda: env.deployment() is None, what="Deployment deleted")
    status = env.check()
    assert status is not None and status["bentoUri"] == env.uri(2)
    assert status["previousBentoUri"] == env.uri(1)
    assert env.container()["args"][1] == env.uri(2)
    assert len(env.events("ServingReconfigured")) == 2


def test_nothing_is_touched_when_not_promoted(env: Env) -> None:
    env.create_watch({"ingress": {"host": "digits.example.com"}})
    assert env.promote(1, promoted=False) is None
    failed = TrainResult(status="failed", reason="bad input", promoted=False)
    assert apply.on_promoted(env.k, env.body, failed, SETTINGS) is None
    assert env.check() is None
    assert env.deployment() is None and env.service() is None and env.ingress() is None
    assert env.events() == []

    # With a model already serving, a non-promoted run leaves every object as it was.
    assert env.promote(1) is not None
    before = our_writes(env.deployment()), our_writes(env.service()), our_writes(env.ingress())
    n_events = len(env.events())
    time.sleep(1.1)  # managedFields times have a resolution of one second
    assert env.promote(2, promoted=False) is None
    after = our_writes(env.deployment()), our_writes(env.service()), our_writes(env.ingress())
    assert after == before
    assert len(env.events()) == n_events
    assert env.container()["args"][1] == env.uri(1)


def test_rollback_when_the_new_replicaset_misses_its_deadline(env: Env) -> None:
    env.create_watch({"replicas": 1, "progressDeadlineSeconds": 5})
    # v1 rolls out and its pod becomes Ready.
    env.promote(1)
    env.make_pods_ready(1, 1)
    env.wait_complete(1)
    status = env.check()
    assert status is not None and status["phase"] == "Available"
    assert status["readyReplicas"] == 1
    assert len(env.events("RolloutComplete")) == 1
    rs1 = env.replicaset_of(1)
    assert rs1 is not None

    # v2 is promoted; its pod never becomes Ready.
    status = env.promote(2)
    assert status is not None and status["previousBentoUri"] == env.uri(1)
    assert conditions(status)["Available"]["status"] == "True"

    def deadline_exceeded() -> dict[str, Any] | None:
        dep = env.deployment()
        assert dep is not None
        # The previous model serves throughout: v1's ReplicaSet stays available.
        rs = env.replicaset_of(1)
        assert rs is not None and (rs["status"].get("availableReplicas") or 0) == 1
        return dep if observe(dep).deadline_exceeded else None

    before_check = env.check()  # before the deadline: still rolling out, nothing rolled back
    assert before_check is not None and before_check["phase"] == "Progressing"
    assert conditions(before_check)["Progressing"]["reason"] == "RollingOut"
    wait_for(deadline_exceeded, timeout=60, what="ProgressDeadlineExceeded from the controller")

    status = env.check()
    assert status is not None
    assert status["phase"] == "RolledBack"
    assert status["modelVersion"] == "1" and status["bentoUri"] == env.uri(1)
    assert status["rolledBackFrom"] == env.uri(2)
    rolled = conditions(status)["RolledBack"]
    assert rolled["status"] == "True" and rolled["reason"] == "ProgressDeadlineExceeded"
    assert "v2" in rolled["message"] and "v1" in rolled["message"]
    assert env.container()["args"][1] == env.uri(1)
    env_vars = {e["name"]: e.get("value") for e in env.container()["env"]}
    assert env_vars["KUBETRAIN_BENTO_URI"] == env.uri(1)
    [event] = env.events("RolledBack")
    assert event["type"] == "Warning" and "progressDeadlineSeconds=5" in event["message"]

    # The controller re-uses v1's ReplicaSet (same template), whose pod never stopped.
    dep = env.wait_complete(1)
    assert observe(dep, env.replicasets()).new_replicaset == rs1["metadata"]["name"]
    status = env.check()
    assert status is not None and status["phase"] == "RolledBack"
    assert conditions(status)["Progressing"]["reason"] == "RolloutComplete"
    assert conditions(status)["RolledBack"]["status"] == "True"
    assert len(env.events("RolledBack")) == 1  # one Event per rollback, not per check

    # The failed result replayed is not rolled out again.
    env.promote(2)
    assert env.container()["args"][1] == env.uri(1)


def test_history_limit_deletes_old_bentos_but_never_serving_or_previous(
    env: Env, minio: Any
) -> None:
    env.create_watch({"historyLimit": 2, "progressDeadlineSeconds": 5})
    env.upload(minio, "mnist-1.bento", "mnist-2.bento", "fashion-1.bento", "mnist-notes.txt")

    env.upload(minio, "mnist-3.bento")
    env.promote(3)  # first rollout: keeps v3 and the newest other one (v2)
    assert env.bento_names(minio) == {
        "mnist-2.bento",
        "mnist-3.bento",
        "fashion-1.bento",
        "mnist-notes.txt",
    }
    [pruned] = env.events("BentosPruned")
    assert "mnist-1.bento" in pruned["message"]
    env.make_pods_ready(3, 1)
    env.wait_complete(3)
    env.check()

    env.upload(minio, "mnist-4.bento")
    env.promote(4)  # serving v4 (rolling out), previous v3
    assert env.bento_names(minio) >= {"mnist-3.bento", "mnist-4.bento"}
    assert "mnist-2.bento" not in env.bento_names(minio)

    # v4 misses its deadline: back to v3, which is now older than v4 ...
    wait_for(
        lambda: observe(env.deployment() or {}).deadline_exceeded,
        timeout=60,
        what="ProgressDeadlineExceeded",
    )
    status = env.check()
    assert status is not None and status["phase"] == "RolledBack"

    # ... and v5 arrives: v5 is served, v3 (the last good one) is previous and stays even
    # though v4 is newer; v4 goes.
    env.upload(minio, "mnist-5.bento")
    status = env.promote(5)
    assert status is not None and status["previousBentoUri"] == env.uri(3)
    assert env.bento_names(minio) == {
        "mnist-3.bento",
        "mnist-5.bento",
        "fashion-1.bento",
        "mnist-notes.txt",
    }


def test_stale_writes_conflict_and_foreign_objects_are_not_taken_over(env: Env) -> None:
    env.create_watch({})
    env.promote(1)
    dep = env.deployment()
    assert dep is not None
    stale = dep["metadata"]["resourceVersion"]
    env.promote(2)
    target = parse_target(env.body, SETTINGS)
    state = RolloutState.from_annotations(dep["metadata"]["annotations"])
    assert state is not None
    # A write computed from an old read loses (another replica acted meanwhile) ...
    with pytest.raises(apply._Conflict):
        apply._apply_all(env.k, target, state, SETTINGS, stale)
    assert env.container()["args"][1] == env.uri(2)

    # ... and a Service of the same name that this watch does not own is left alone.
    env.k.delete(f"/api/v1/namespaces/{env.ns}/services/{env.serving_name}")
    wait_for(lambda: env.service() is None, what="Service deleted")
    env.k.request(
        "POST",
        f"/api/v1/namespaces/{env.ns}/services",
        body={
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": env.serving_name, "labels": {"team": "other"}},
            "spec": {"selector": {"app": "other"}, "ports": [{"port": 8080}]},
        },
    )
    with pytest.raises(RolloutError, match="not owned by DatasetWatch"):
        env.promote(3)
    svc = env.service()
    assert svc is not None and svc["spec"]["selector"] == {"app": "other"}
    assert "ownerReferences" not in svc["metadata"]
    assert env.container()["args"][1] == env.uri(2)  # nothing applied at all
