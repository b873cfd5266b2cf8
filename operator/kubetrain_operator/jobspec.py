"""The training Job a watch launches: a pure function from (watch, run) to a batch/v1 Job dict.

Contract points (docs/contract.md):
- name `<watch>-train-<n>` with `n` the watch's persisted run counter, so creating it again
  after a crash is idempotent (409 AlreadyExists -> adopt);
- labels `kubetrain.dev/watch` and `kubetrain.dev/run` (adoption lists Jobs by them) and an
  ownerReference to the watch (`controller: true`), so deleting the watch deletes its Jobs;
- the container `command` is always set (`["kubetrain-train"]`); the snapshot manifest is
  passed by reference (`--manifest s3://<bucket>/<key>`), never inline;
- env per the trainer contract, MinIO credentials only through secretKeyRef;
- `podFailurePolicy`: exit code 2 (bad input) fails the Job at once, a disrupted pod does not
  count against `backoffLimit`; any other failure is retried up to `backoffLimit`;
- `terminationMessagePolicy: FallbackToLogsOnError`: the result JSON, or the log tail if the
  trainer died before writing it;
- non-root, no privilege escalation, all capabilities dropped, no service-account token.
"""

from __future__ import annotations

from typing import Any

import kubetrain_contract as contract

from kubetrain_operator.constants import LABEL_MANAGED_BY, MANAGED_BY
from kubetrain_operator.constants import LABEL_RUN as LABEL_RUN
from kubetrain_operator.constants import LABEL_WATCH as LABEL_WATCH
from kubetrain_operator.spec import API_VERSION, KIND, WatchSpec

ANN_MANIFEST = "kubetrain.dev/manifest"
ANN_MANIFEST_KEY = "kubetrain.dev/manifest-key"
ANN_DIGEST = "kubetrain.dev/dataset-digest"
ANN_REASON = "kubetrain.dev/trigger-reason"
ANN_GENERATION = "kubetrain.dev/watch-generation"
CONTAINER = "trainer"
TERMINATION_LOG = "/dev/termination-log"
BENTO_PREFIX = f"{contract.RESERVED_PREFIX}bentos/"
#: Pod exit codes that fail the Job immediately (retrying a bad input cannot help).
NON_RETRYABLE_EXIT_CODES = (contract.EXIT_BAD_INPUT,)


def job_name(watch: str, run: int) -> str:
    return f"{watch}-train-{run}"


def run_number(job_name_: str, watch: str) -> int | None:
    """n of `<watch>-train-<n>`, or None when the name does not follow the pattern."""
    head = f"{watch}-train-"
    tail = job_name_[len(head) :] if job_name_.startswith(head) else ""
    return int(tail) if tail.isdigit() else None


def manifest_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def owner_reference(spec: WatchSpec) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": spec.name,
        "uid": spec.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(watch: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_WATCH: watch}


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def trainer_env(
    spec: WatchSpec, *, trigger_reason: str, default_mlflow_uri: str
) -> list[dict[str, Any]]:
    t = spec.training
    secret = spec.source.credentials_secret
    return [
        _env("MINIO_ENDPOINT", spec.source.endpoint),
        {
            "name": "MINIO_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "accessKey"}},
        },
        {
            "name": "MINIO_SECRET_KEY",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "secretKey"}},
        },
        _env("MLFLOW_TRACKING_URI", t.mlflow.tracking_uri or default_mlflow_uri),
        _env("KUBETRAIN_WATCH", spec.watch_id),
        _env("KUBETRAIN_MODEL_NAME", spec.model_name),
        _env("KUBETRAIN_EXPERIMENT", spec.experiment),
        _env("KUBETRAIN_EPOCHS", str(t.epochs)),
        _env("KUBETRAIN_BATCH_SIZE", str(t.batch_size)),
        _env("KUBETRAIN_TRIGGER_REASON", trigger_reason[:1000]),
        _env("KUBETRAIN_MIN_ACCURACY", repr(t.min_accuracy)),
        _env("KUBETRAIN_TOLERANCE", repr(t.tolerance)),
        _env("KUBETRAIN_WARM_START", "true" if t.warm_start else "false"),
        {
            "name": "KUBETRAIN_CPU_LIMIT",
            "valueFrom": {
                "resourceFieldRef": {"containerName": CONTAINER, "resource": "limits.cpu"}
            },
        },
        _env("KUBETRAIN_BENTO_PREFIX", BENTO_PREFIX),
        _env("BENTOML_DO_NOT_TRACK", "true"),
    ]


def build_job(
    spec: WatchSpec,
    *,
    run: int,
    manifest_key: str,
    dataset_digest: str,
    trigger_reason: str,
    default_image: str,
    default_mlflow_uri: str,
    trainer_uid: int = 10001,
) -> dict[str, Any]:
    """The complete Job object for run `run` of `spec` (ready for POST)."""
    t = spec.training
    name = job_name(spec.name, run)
    labels = {
        "app.kubernetes.io/name": "kubetrain-trainer",
        "app.kubernetes.io/part-of": "kubetrain",
        **selector_labels(spec.name),
        LABEL_RUN: str(run),
    }
    uri = manifest_uri(spec.source.bucket, manifest_key)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": t.image or default_image,
        "imagePullPolicy": t.image_pull_policy,
        "command": ["kubetrain-train"],
        "args": ["--manifest", uri],
        "env": trainer_env(
            spec, trigger_reason=trigger_reason, default_mlflow_uri=default_mlflow_uri
        ),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
    }
    if t.resources:
        container["resources"] = dict(t.resources)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": trainer_uid,
            "runAsGroup": trainer_uid,
            "fsGroup": trainer_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    if t.service_account_name:
        pod_spec["serviceAccountName"] = t.service_account_name
    if t.node_selector:
        pod_spec["nodeSelector"] = dict(t.node_selector)
    if t.tolerations:
        pod_spec["tolerations"] = [dict(x) for x in t.tolerations]
    job_spec: dict[str, Any] = {
        "backoffLimit": t.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER,
                        "operator": "In",
                        "values": list(NON_RETRYABLE_EXIT_CODES),
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": {
            "metadata": {"labels": {**selector_labels(spec.name), LABEL_RUN: str(run)}},
            "spec": pod_spec,
        },
    }
    if t.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = t.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {
                ANN_MANIFEST: uri,
                ANN_MANIFEST_KEY: manifest_key,
                ANN_DIGEST: dataset_digest,
                ANN_REASON: trigger_reason[:1000],
                ANN_GENERATION: str(spec.generation),
            },
            "ownerReferences": [owner_reference(spec)],
        },
        "spec": job_spec,
    }
