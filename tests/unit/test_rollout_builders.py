"""Unit tests of the pure serving-object builders in kubetrain_operator.serving_rollout."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from kubetrain_contract import TrainResult
from kubetrain_operator.serving_rollout.objects import (
    build_deployment,
    build_ingress,
    build_service,
    desired_objects,
    serving_url,
)
from kubetrain_operator.serving_rollout.spec import (
    ServingTarget,
    label_value,
    parse_target,
    selector_labels,
    serving_name,
)
from kubetrain_operator.serving_rollout.state import ANN_PHASE, Phase, Release, RolloutState
from kubetrain_operator.settings import RolloutSettings
from kubetrain_operator.spec import ServingSpecError
from kubetrain_serving.cli import parse_args as serve_args

from tests.support.psa import restricted_violations

SETTINGS = RolloutSettings()
V1 = Release("s3://data/.kubetrain/bentos/mnist-1.bento", "1", "mnist")
V2 = Release("s3://data/.kubetrain/bentos/mnist-2.bento", "2", "mnist")


def watch(**serving: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubetrain.dev/v1alpha1",
        "kind": "DatasetWatch",
        "metadata": {"name": "digits", "namespace": "ml", "uid": "uid-123"},
        "spec": {
            "source": {
                "endpoint": "http://minio.ml:9000",
                "bucket": "data",
                "credentialsSecretRef": {"name": "minio-creds"},
            },
            "training": {"image": "registry.local/kubetrain-trainer:1.2"},
        },
    }
    if serving:
        body["spec"]["serving"] = serving
    return body


def target(**serving: Any) -> ServingTarget:
    return parse_target(watch(**serving), SETTINGS)


def state(release: Release = V1, **kw: Any) -> RolloutState:
    return RolloutState(
        current=release, phase=kw.pop("phase", Phase.PROGRESSING), started="t0", **kw
    )


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


# ------------------------------------------------------------------------------ parsing


def test_defaults() -> None:
    t = target()
    assert t.name == "digits-serving"
    assert t.image == "registry.local/kubetrain-trainer:1.2"
    assert t.endpoint == "http://minio.ml:9000"
    assert t.credentials_secret == "minio-creds"
    s = t.serving
    assert (s.enabled, s.replicas, s.port, s.history_limit, s.progress_deadline_seconds) == (
        True,
        1,
        3000,
        5,
        600,
    )
    assert s.ingress is None


def test_image_precedence() -> None:
    assert target(image="serve:9").image == "serve:9"
    body = watch()
    del body["spec"]["training"]
    assert parse_target(body, RolloutSettings(default_image="fallback:1")).image == "fallback:1"


@pytest.mark.parametrize(
    ("serving", "field"),
    [
        ({"replicas": 0}, "spec.serving.replicas"),
        ({"replicas": "2"}, "spec.serving.replicas"),
        ({"replicas": True}, "spec.serving.replicas"),
        ({"port": 80}, "spec.serving.port"),
        ({"historyLimit": 0}, "spec.serving.historyLimit"),
        ({"progressDeadlineSeconds": 1}, "spec.serving.progressDeadlineSeconds"),
        ({"enabled": "yes"}, "spec.serving.enabled"),
        ({"imagePullPolicy": "Sometimes"}, "spec.serving.imagePullPolicy"),
        ({"resources": {"limit": {"cpu": "1"}}}, "spec.serving.resources.limit"),
        ({"resources": {"limits": "1cpu"}}, "spec.serving.resources.limits"),
        ({"ingress": {"host": "Bad_Host"}}, "spec.serving.ingress.host"),
        ({"ingress": {"host": ""}}, "spec.serving.ingress.host"),
        ({"ingress": {"host": "a.example.com", "path": "api"}}, "spec.serving.ingress.path"),
    ],
)
def test_bad_serving_spec_names_the_field(serving: dict[str, Any], field: str) -> None:
    with pytest.raises(ServingSpecError, match=re.escape(field)):
        target(**serving)


def test_bad_source_names_the_field() -> None:
    body = watch()
    body["spec"]["source"]["endpoint"] = "minio:9000"
    with pytest.raises(ServingSpecError, match=r"spec\.source\.endpoint"):
        parse_target(body, SETTINGS)
    body = watch()
    del body["spec"]["source"]["credentialsSecretRef"]
    with pytest.raises(ServingSpecError, match=r"credentialsSecretRef"):
        parse_target(body, SETTINGS)


def test_release_from_result() -> None:
    ok = TrainResult(
        status="succeeded",
        promoted=True,
        modelName="mnist",
        modelVersion="7",
        bentoUri=V1.bento_uri,
    )
    assert Release.from_result(ok) == Release(V1.bento_uri, "7", "mnist")
    with pytest.raises(ServingSpecError, match=r"result\.bentoUri"):
        Release.from_result(TrainResult(status="succeeded", promoted=True, modelVersion="7"))
    with pytest.raises(ServingSpecError, match=r"result\.bentoUri"):
        Release.from_result(
            TrainResult(
                status="succeeded", promoted=True, modelVersion="7", bentoUri="/tmp/x.bento"
            )
        )
    with pytest.raises(ServingSpecError, match=r"result\.modelVersion"):
        Release.from_result(TrainResult(status="succeeded", promoted=True, bentoUri=V1.bento_uri))


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name",
    ["digits", "a" * 55, "a" * 56, "x" * 200, "7up", "my.watch.v2", "a-" + "b" * 70],
)
def test_serving_name_is_a_valid_stable_service_name(name: str) -> None:
    got = serving_name(name)
    assert len(got) <= 63
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", got), got
    assert got.endswith("-serving")
    assert got == serving_name(name)
    if len(name) <= 55 and re.fullmatch(r"[a-z][-a-z0-9]*", name):
        assert got == f"{name}-serving"


def test_long_names_do_not_collide() -> None:
    a, b = "x" * 100 + "a", "x" * 100 + "b"
    assert serving_name(a) != serving_name(b)
    assert label_value(a) != label_value(b)
    assert len(label_value(a)) <= 63
    assert label_value("digits") == "digits"


# ------------------------------------------------------------------------------ Deployment


def test_deployment_spec() -> None:
    t = target(
        replicas=3,
        port=8080,
        historyLimit=4,
        progressDeadlineSeconds=120,
        resources={"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "3Gi"}},
    )
    d = build_deployment(t, state(V2, previous=V1), SETTINGS)
    assert d["apiVersion"] == "apps/v1" and d["kind"] == "Deployment"
    meta = d["metadata"]
    assert (meta["name"], meta["namespace"]) == ("digits-serving", "ml")
    assert meta["labels"]["app.kubernetes.io/name"] == "kubetrain-serving"
    assert meta["labels"]["app.kubernetes.io/instance"] == "digits"
    assert meta["labels"]["kubetrain.dev/watch"] == "digits"
    assert meta["annotations"]["kubetrain.dev/model-version"] == "2"
    assert meta["annotations"]["kubetrain.dev/bento-uri"] == V2.bento_uri
    assert meta["annotations"]["kubetrain.dev/previous-bento-uri"] == V1.bento_uri
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kubetrain.dev/v1alpha1",
            "kind": "DatasetWatch",
            "name": "digits",
            "uid": "uid-123",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = d["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert spec["progressDeadlineSeconds"] == 120
    assert spec["revisionHistoryLimit"] == 4
    template = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    assert template["metadata"]["annotations"]["kubetrain.dev/bento-uri"] == V2.bento_uri
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    [c] = pod["containers"]
    assert c["image"] == "registry.local/kubetrain-trainer:1.2"
    assert c["command"] == ["kubetrain-serve"]
    # No --host: kubetrain-serve listens on 0.0.0.0 in the pod's own network namespace.
    assert c["args"] == ["--bento", V2.bento_uri, "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "3Gi"},
    }
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["httpGet"]["port"] == "http"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    env = env_of(c)
    assert "POD_IP" not in env
    assert env["KUBETRAIN_BENTO_URI"]["value"] == V2.bento_uri
    assert env["KUBETRAIN_MODEL_VERSION"]["value"] == "2"
    assert env["BENTOML_DO_NOT_TRACK"]["value"] == "true"
    assert env["MINIO_ENDPOINT"]["value"] == "http://minio.ml:9000"
    for var, key in [
        ("MINIO_ACCESS_KEY", "accessKey"),
        ("MINIO_SECRET_KEY", "secretKey"),
        ("AWS_ACCESS_KEY_ID", "accessKey"),
        ("AWS_SECRET_ACCESS_KEY", "secretKey"),
    ]:
        assert env[var] == {
            "name": var,
            "valueFrom": {"secretKeyRef": {"name": "minio-creds", "key": key}},
        }
        assert "value" not in env[var]  # credentials only by reference, never inline
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts[env["BENTOML_HOME"]["value"]]]


def test_default_resources_when_unset() -> None:
    d = build_deployment(target(), state(), SETTINGS)
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "2Gi"},
    }


def test_serving_pod_listens_on_all_interfaces_of_its_own_network() -> None:
    """Every pod has its own network namespace: the server binds 0.0.0.0 on the container
    port, with no pod-IP plumbing and no host networking or host ports."""
    d = build_deployment(target(port=8080), state(), SETTINGS)
    pod = d["spec"]["template"]["spec"]
    [c] = pod["containers"]
    options = serve_args(c["args"])
    assert (options.host, options.port) == ("0.0.0.0", 8080)
    assert options.bento == V1.bento_uri
    assert not any("$(" in a for a in c["args"])
    assert "POD_IP" not in env_of(c)
    assert not pod.get("hostNetwork")
    assert all("hostPort" not in p for p in c["ports"])


@pytest.mark.parametrize(
    "serving",
    [{}, {"replicas": 3, "port": 8080, "resources": {"limits": {"cpu": "2", "memory": "3Gi"}}}],
)
def test_serving_pod_passes_pod_security_restricted(serving: dict[str, Any]) -> None:
    for settings in (SETTINGS, RolloutSettings(run_as_user=2000)):
        d = build_deployment(target(**serving), state(), settings)
        pod = d["spec"]["template"]["spec"]
        assert restricted_violations(pod) == []
        # Set at pod level, so it holds for every container (and any added later).
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == settings.run_as_user
        assert {v["name"]: sorted(set(v) - {"name"}) for v in pod["volumes"]} == {
            "tmp": ["emptyDir"],
            "bentoml-home": ["emptyDir"],
        }


def test_pod_security_check_is_not_vacuous() -> None:
    """The checker rejects what "restricted" rejects (so passing it means something)."""
    good = build_deployment(target(), state(), SETTINGS)["spec"]["template"]["spec"]
    assert restricted_violations(good) == []

    def broken(change: Any) -> list[str]:
        pod = copy.deepcopy(good)
        change(pod, pod["containers"][0])
        return restricted_violations(pod)

    assert broken(lambda p, c: p.update(hostNetwork=True))
    assert broken(lambda p, c: c["ports"][0].update(hostPort=3000))
    assert broken(lambda p, c: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}))
    assert broken(lambda p, c: p["securityContext"].pop("seccompProfile"))
    assert broken(lambda p, c: p["securityContext"].update(runAsUser=0))
    assert broken(
        lambda p, c: [
            p["securityContext"].pop("runAsNonRoot"),
            c["securityContext"].pop("runAsNonRoot"),
        ]
    )
    assert broken(lambda p, c: c["securityContext"].pop("allowPrivilegeEscalation"))
    assert broken(lambda p, c: c["securityContext"].update(capabilities={"drop": ["NET_RAW"]}))
    assert broken(lambda p, c: c["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]))
    assert broken(lambda p, c: c["securityContext"].update(privileged=True))


def test_template_depends_only_on_spec_and_release() -> None:
    """Going back to a release reproduces its template: the old ReplicaSet is reused."""
    t = target()
    a = build_deployment(t, state(V1, phase=Phase.PROGRESSING), SETTINGS)
    b = build_deployment(
        t,
        RolloutState(
            current=V1, phase=Phase.ROLLED_BACK, started="t9", rolled_back_from=V2, message="x"
        ),
        SETTINGS,
    )
    c = build_deployment(t, state(V2), SETTINGS)
    assert a["spec"]["template"] == b["spec"]["template"]
    assert a["spec"]["template"] != c["spec"]["template"]
    assert a["metadata"]["annotations"] != b["metadata"]["annotations"]


def test_spec_hash_tracks_spec_not_state() -> None:
    t = target()
    h1 = desired_objects(t, state(V1), SETTINGS).spec_hash
    h2 = desired_objects(t, state(V1, phase=Phase.AVAILABLE), SETTINGS).spec_hash
    h3 = desired_objects(target(replicas=2), state(V1), SETTINGS).spec_hash
    h4 = desired_objects(t, state(V2), SETTINGS).spec_hash
    assert h1 == h2
    assert len({h1, h3, h4}) == 3
    d = desired_objects(t, state(V1), SETTINGS).deployment
    assert d["metadata"]["annotations"]["kubetrain.dev/spec-hash"] == h1


def test_builders_do_not_share_mutable_state() -> None:
    t = target()
    d1 = build_deployment(t, state(), SETTINGS)
    snapshot = copy.deepcopy(d1)
    d1["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "9"
    assert build_deployment(t, state(), SETTINGS) == snapshot


# ------------------------------------------------------------------------------ Service/Ingress


def test_service() -> None:
    s = build_service(target())
    assert s["metadata"]["name"] == "digits-serving"
    assert s["spec"]["type"] == "ClusterIP"
    assert s["spec"]["selector"] == selector_labels("digits")
    assert s["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert s["metadata"]["ownerReferences"][0]["uid"] == "uid-123"


def test_no_ingress_without_spec() -> None:
    t = target()
    assert build_ingress(t) is None
    assert serving_url(t, SETTINGS) == "http://digits-serving.ml.svc.cluster.local"


def test_ingress_with_tls_and_class() -> None:
    t = target(
        ingress={
            "host": "digits.example.com",
            "path": "/mnist",
            "className": "nginx",
            "tlsSecretName": "digits-tls",
        }
    )
    ing = build_ingress(t)
    assert ing is not None
    assert ing["apiVersion"] == "networking.k8s.io/v1"
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["digits.example.com"], "secretName": "digits-tls"}]
    [rule] = spec["rules"]
    assert rule["host"] == "digits.example.com"
    [path] = rule["http"]["paths"]
    assert path["path"] == "/mnist" and path["pathType"] == "Prefix"
    assert path["backend"] == {"service": {"name": "digits-serving", "port": {"name": "http"}}}
    assert serving_url(t, SETTINGS) == "https://digits.example.com/mnist"


def test_ingress_without_tls_or_class() -> None:
    t = target(ingress={"host": "digits.example.com"})
    ing = build_ingress(t)
    assert ing is not None
    assert "tls" not in ing["spec"] and "ingressClassName" not in ing["spec"]
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["path"] == "/"
    assert serving_url(t, SETTINGS) == "http://digits.example.com/"


# ------------------------------------------------------------------------------ state


def test_state_annotations_round_trip() -> None:
    s = RolloutState(
        current=V1,
        phase=Phase.ROLLED_BACK,
        started="2026-11-26T06:00:00Z",
        previous=None,
        rolled_back_from=V2,
        message="v2 timed out",
    )
    assert RolloutState.from_annotations(s.annotations()) == s
    s2 = RolloutState(current=V2, phase=Phase.PROGRESSING, started="t", previous=V1)
    assert RolloutState.from_annotations(s2.annotations()) == s2
    assert RolloutState.from_annotations({}) is None
    assert RolloutState.from_annotations(None) is None
    garbled = {**s2.annotations(), ANN_PHASE: "Weird"}
    assert RolloutState.from_annotations(garbled).phase == Phase.PROGRESSING  # type: ignore[union-attr]
