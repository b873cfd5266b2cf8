"""The training Job spec: name, ownership, command, env contract, failure policy, PodSecurity."""

from __future__ import annotations

from typing import Any

import kubetrain_contract as contract
from kubetrain_operator.jobspec import build_job, job_name, run_number
from kubetrain_operator.spec import parse_watch

from tests.support.psa import restricted_violations

WATCH: dict[str, Any] = {
    "apiVersion": "kubetrain.dev/v1alpha1",
    "kind": "DatasetWatch",
    "metadata": {"name": "mnist", "namespace": "ml", "uid": "u-1", "generation": 3},
    "spec": {
        "source": {
            "endpoint": "http://minio.ml:9000",
            "bucket": "digits",
            "prefix": "train/",
            "credentialsSecretRef": {"name": "minio-creds"},
        },
        "training": {
            "image": "registry/kubetrain-trainer:1",
            "resources": {"limits": {"cpu": "2", "nvidia.com/gpu": 1}},
            "backoffLimit": 4,
            "activeDeadlineSeconds": 900,
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "epochs": 7,
            "batchSize": 32,
            "mlflow": {
                "trackingUri": "http://mlflow:5000",
                "experiment": "exp",
                "modelName": "digits",
            },
        },
    },
}


def make() -> dict[str, Any]:
    spec = parse_watch(WATCH)
    key = contract.manifest_key(spec.snapshot_dir, "sha256:abc")
    return build_job(
        spec,
        run=4,
        manifest_key=key,
        dataset_digest="sha256:abc",
        trigger_reason="changes over threshold 200: 7=201",
        default_image="unused",
        default_mlflow_uri="unused",
    )


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    c = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_name_labels_owner() -> None:
    job = make()
    meta = job["metadata"]
    assert meta["name"] == "mnist-train-4" == job_name("mnist", 4)
    assert run_number("mnist-train-4", "mnist") == 4
    assert run_number("other-train-4", "mnist") is None
    assert meta["labels"]["kubetrain.dev/watch"] == "mnist"
    assert meta["labels"]["kubetrain.dev/run"] == "4"
    (owner,) = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "kubetrain.dev/v1alpha1",
        "kind": "DatasetWatch",
        "name": "mnist",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_container_command_args_and_manifest_reference() -> None:
    job = make()
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["kubetrain-train"]
    assert c["args"] == ["--manifest", "s3://digits/.kubetrain/snapshots/ml-mnist/abc.json"]
    assert c["image"] == "registry/kubetrain-trainer:1"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["resources"] == {"limits": {"cpu": "2", "nvidia.com/gpu": 1}}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_env_contract() -> None:
    env = env_of(make())
    assert env["MINIO_ENDPOINT"] == "http://minio.ml:9000"
    assert env["MINIO_ACCESS_KEY"] == {"secretKeyRef": {"name": "minio-creds", "key": "accessKey"}}
    assert env["MINIO_SECRET_KEY"] == {"secretKeyRef": {"name": "minio-creds", "key": "secretKey"}}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["KUBETRAIN_WATCH"] == "ml/mnist"
    assert env["KUBETRAIN_MODEL_NAME"] == "digits"
    assert env["KUBETRAIN_EXPERIMENT"] == "exp"
    assert env["KUBETRAIN_EPOCHS"] == "7"
    assert env["KUBETRAIN_BATCH_SIZE"] == "32"
    assert env["KUBETRAIN_TRIGGER_REASON"] == "changes over threshold 200: 7=201"
    assert env["KUBETRAIN_WARM_START"] == "false"
    assert float(env["KUBETRAIN_MIN_ACCURACY"]) == 0.8
    assert float(env["KUBETRAIN_TOLERANCE"]) == 0.01
    assert env["KUBETRAIN_CPU_LIMIT"] == {
        "resourceFieldRef": {"containerName": "trainer", "resource": "limits.cpu"}
    }
    assert env["KUBETRAIN_BENTO_PREFIX"] == ".kubetrain/bentos/"
    # No credential value is ever inlined.
    assert all("secret" not in str(v).lower() or "secretKeyRef" in str(v) for v in env.values())


def test_job_policy_fields() -> None:
    spec = make()["spec"]
    assert spec["backoffLimit"] == 4
    assert spec["activeDeadlineSeconds"] == 900
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {
            "containerName": "trainer",
            "operator": "In",
            "values": [contract.EXIT_BAD_INPUT],
        },
    }
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"][0]["key"] == "gpu"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False


def test_defaults_from_operator_settings() -> None:
    body = {**WATCH, "spec": {**WATCH["spec"], "training": {}}}
    spec = parse_watch(body)
    job = build_job(
        spec,
        run=1,
        manifest_key="k",
        dataset_digest="d",
        trigger_reason="initial",
        default_image="img:default",
        default_mlflow_uri="http://ml:5000",
    )
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "img:default"
    assert "resources" not in c
    env = env_of(job)
    assert env["MLFLOW_TRACKING_URI"] == "http://ml:5000"
    assert env["KUBETRAIN_MODEL_NAME"] == "mnist" and env["KUBETRAIN_EXPERIMENT"] == "mnist"


def test_training_pod_passes_pod_security_restricted() -> None:
    """The Job's pod is admitted by PodSecurity "restricted": non-root (pod level, and the UID is
    never 0), seccomp RuntimeDefault, no privilege escalation, every capability dropped, only an
    emptyDir volume, no host namespaces or host ports."""
    minimal = parse_watch({**WATCH, "spec": {**WATCH["spec"], "training": {}}})
    for spec, uid in ((parse_watch(WATCH), 10001), (minimal, 4242)):
        job = build_job(
            spec,
            run=1,
            manifest_key="k",
            dataset_digest="d",
            trigger_reason="initial",
            default_image="img",
            default_mlflow_uri="http://ml:5000",
            trainer_uid=uid,
        )
        pod = job["spec"]["template"]["spec"]
        assert restricted_violations(pod) == []
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == uid
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        [c] = pod["containers"]
        assert c["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        }
        assert pod["volumes"] == [{"name": "scratch", "emptyDir": {}}]
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        assert all("hostPort" not in port for port in c.get("ports", []))
