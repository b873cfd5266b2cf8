"""Serving rollout, the pure half: desired objects and rollout decisions, no Kubernetes I/O.

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

**Where the rollout state lives.** Everything the operator must remember between calls (the
release being served, the previous known-good one to roll back to, the phase, why it rolled
back) is kept in annotations of the Deployment itself (`RolloutState`), not only in the
watch's status. The Deployment is written with one full server-side apply per change, so
state and spec can never disagree, an operator restart loses nothing, and `status.serving`
is always recomputable from the cluster (it is a report, never an input).

**Phases** (annotation `kubetrain.dev/rollout-phase`):

* `Progressing`: a newly promoted Bento is rolling out; only in this phase is a rollback
  possible;
* `Available`: the current Bento was observed fully rolled out (known good);
* `RolledBack`: the promoted Bento missed its deadline and the Deployment was set back to
  the previous Bento (known good: its pods never stopped serving);
* `Failed`: the promoted Bento missed its deadline and there was nothing to roll back to.

**The deadline** is the Deployment's own `progressDeadlineSeconds`: the Deployment
controller sets condition `Progressing=False, reason=ProgressDeadlineExceeded` when the new
ReplicaSet makes no progress for that long, which is the faithful, restart-proof signal
("the new ReplicaSet is not available within a deadline"). `observe()` reads it together
with the Deployment's and ReplicaSets' counts; `decide()` turns (state, observation) into
one `Action`.

**Previous release.** On promotion the previous release becomes the *last known-good* one:
the current release if it is Available/RolledBack (or observed complete right now), else the
previous one already recorded (a promotion that lands while another is still rolling out
keeps the older, proven release as rollback target), else, when nothing was ever proven,
the current one (the best there is).

**Idempotence.** `promote()` returns None for a result whose Bento is already current or was
already rolled back from, so replaying a Job result (an operator restart) changes nothing.

**Bento history.** `bentos_to_delete()` chooses which `.bento` objects of the same model, in
the same bucket folder as the current Bento (normally `.kubetrain/bentos/`), exceed
`historyLimit`; the current and previous Bentos are never chosen.

Everything here is a pure function of plain dicts and dataclasses; `rollout_apply` does the
I/O. docs/rollout.md describes the behaviour for operators of the system.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kubetrain_contract import TrainResult
from kubetrain_contract.s3 import S3ConfigError, parse_endpoint

from kubetrain_operator.settings import RolloutSettings  # = OperatorSettings.rollout

WATCH_API_VERSION = "kubetrain.dev/v1alpha1"
WATCH_KIND = "DatasetWatch"

# Labels: the first two select the pods (immutable selector), the rest are informative.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_WATCH = "kubetrain.dev/watch"
SERVING_APP = "kubetrain-serving"
MANAGED_BY = "kubetrain-operator"

# Rollout state, stored on the Deployment (see the module docstring).
ANN_MODEL_NAME = "kubetrain.dev/model-name"
ANN_MODEL_VERSION = "kubetrain.dev/model-version"
ANN_BENTO_URI = "kubetrain.dev/bento-uri"
ANN_PREVIOUS_MODEL_VERSION = "kubetrain.dev/previous-model-version"
ANN_PREVIOUS_BENTO_URI = "kubetrain.dev/previous-bento-uri"
ANN_PHASE = "kubetrain.dev/rollout-phase"
ANN_STARTED = "kubetrain.dev/rollout-started"
ANN_ROLLED_BACK_FROM = "kubetrain.dev/rolled-back-from"
ANN_ROLLED_BACK_FROM_VERSION = "kubetrain.dev/rolled-back-from-version"
ANN_MESSAGE = "kubetrain.dev/rollout-message"
ANN_SPEC_HASH = "kubetrain.dev/spec-hash"

#: Set by the Deployment controller on the Deployment and on each of its ReplicaSets.
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"

CONTAINER_NAME = "serving"
SERVE_COMMAND = ["kubetrain-serve"]
SERVICE_PORT = 80

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_HOST = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PATH = re.compile(r"^/[^\s?#]*$")
_BENTO_NAME = re.compile(r"^(?P<stem>.+)-(?P<version>[A-Za-z0-9._]+)\.bento$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class ServingSpecError(ValueError):
    """A `spec.serving` (or result) the operator cannot roll out; the message names the field."""


# ------------------------------------------------------------------------------ the spec


@dataclass(frozen=True)
class IngressSpec:
    """`spec.serving.ingress`."""

    host: str
    path: str = "/"
    class_name: str = ""
    tls_secret_name: str = ""


@dataclass(frozen=True)
class ServingSpec:
    """`spec.serving`, with the CRD's defaults repeated (for objects older than the CRD)."""

    enabled: bool = True
    image: str = ""
    image_pull_policy: str = "IfNotPresent"
    replicas: int = 1
    port: int = 3000
    resources: Mapping[str, Any] = field(default_factory=dict)
    history_limit: int = 5
    progress_deadline_seconds: int = 600
    ingress: IngressSpec | None = None


@dataclass(frozen=True)
class WatchRef:
    """Identity of the owning DatasetWatch."""

    namespace: str
    name: str
    uid: str

    @property
    def watch_id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": WATCH_API_VERSION,
            "kind": WATCH_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ServingTarget:
    """Everything from a DatasetWatch that shapes its serving objects."""

    watch: WatchRef
    endpoint: str
    """MinIO/S3 endpoint `http(s)://host:port` (spec.source.endpoint)."""
    credentials_secret: str
    """Secret with keys accessKey/secretKey (spec.source.credentialsSecretRef.name)."""
    image: str
    serving: ServingSpec

    @property
    def name(self) -> str:
        return serving_name(self.watch.name)


def _get(obj: Any, path: str, default: Any) -> Any:
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or cur.get(part) is None:
            return default
        cur = cur[part]
    return cur


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ServingSpecError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, kind):
        raise ServingSpecError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _int_in(spec: Mapping[str, Any], path: str, default: int, low: int, high: int) -> int:
    value: int = _typed(_get(spec, path, default), int, f"spec.{path}")
    if not low <= value <= high:
        raise ServingSpecError(f"spec.{path}: {value} is out of range [{low}, {high}]")
    return value


def _resources(raw: Any) -> dict[str, Any]:
    _typed(raw, Mapping, "spec.serving.resources")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in ("requests", "limits", "claims"):
            raise ServingSpecError(
                f"spec.serving.resources.{key}: unknown key (use requests and limits)"
            )
        _typed(value, Mapping if key != "claims" else list, f"spec.serving.resources.{key}")
        out[key] = dict(value) if isinstance(value, Mapping) else list(value)
    return out


def parse_serving(spec: Mapping[str, Any]) -> ServingSpec:
    """Parse `spec.serving` of a DatasetWatch spec; ServingSpecError names a bad field."""
    raw = _get(spec, "serving", {})
    _typed(raw, Mapping, "spec.serving")
    ingress: IngressSpec | None = None
    raw_ingress = _get(spec, "serving.ingress", None)
    if raw_ingress is not None:
        _typed(raw_ingress, Mapping, "spec.serving.ingress")
        host = _typed(_get(raw_ingress, "host", ""), str, "spec.serving.ingress.host")
        if not host or len(host) > 253 or not _HOST.fullmatch(host):
            raise ServingSpecError(
                f"spec.serving.ingress.host: {host!r} must be a DNS name such as model.example.com"
            )
        path = _typed(_get(raw_ingress, "path", "/"), str, "spec.serving.ingress.path") or "/"
        if not _PATH.fullmatch(path):
            raise ServingSpecError(
                f"spec.serving.ingress.path: {path!r} must start with '/' (no spaces, '?' or '#')"
            )
        ingress = IngressSpec(
            host=host,
            path=path,
            class_name=_typed(
                _get(raw_ingress, "className", ""), str, "spec.serving.ingress.className"
            ),
            tls_secret_name=_typed(
                _get(raw_ingress, "tlsSecretName", ""), str, "spec.serving.ingress.tlsSecretName"
            ),
        )
    policy = _typed(
        _get(spec, "serving.imagePullPolicy", "IfNotPresent"), str, "spec.serving.imagePullPolicy"
    )
    if policy not in _PULL_POLICIES:
        raise ServingSpecError(
            f"spec.serving.imagePullPolicy: {policy!r} must be one of {', '.join(_PULL_POLICIES)}"
        )
    return ServingSpec(
        enabled=_typed(_get(spec, "serving.enabled", True), bool, "spec.serving.enabled"),
        image=_typed(_get(spec, "serving.image", ""), str, "spec.serving.image"),
        image_pull_policy=policy,
        replicas=_int_in(spec, "serving.replicas", 1, 1, 100),
        # A non-root container without capabilities cannot bind below 1024.
        port=_int_in(spec, "serving.port", 3000, 1024, 65535),
        resources=_resources(_get(spec, "serving.resources", {})),
        history_limit=_int_in(spec, "serving.historyLimit", 5, 1, 100),
        progress_deadline_seconds=_int_in(spec, "serving.progressDeadlineSeconds", 600, 5, 86400),
        ingress=ingress,
    )


def parse_target(body: Mapping[str, Any], settings: RolloutSettings) -> ServingTarget:
    """What a DatasetWatch object (kopf body or API dict) asks of its serving objects."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    name, namespace, uid = (str(meta.get(k) or "") for k in ("name", "namespace", "uid"))
    if not name or not namespace or not uid:
        raise ServingSpecError("metadata.name, metadata.namespace and metadata.uid are required")
    endpoint = _typed(_get(spec, "source.endpoint", ""), str, "spec.source.endpoint")
    try:
        endpoint = parse_endpoint(endpoint, "spec.source.endpoint")
    except S3ConfigError as exc:
        raise ServingSpecError(str(exc)) from None
    secret = _typed(
        _get(spec, "source.credentialsSecretRef.name", ""),
        str,
        "spec.source.credentialsSecretRef.name",
    )
    if not secret:
        raise ServingSpecError("spec.source.credentialsSecretRef.name is required")
    serving = parse_serving(spec)
    training_image = _typed(_get(spec, "training.image", ""), str, "spec.training.image")
    return ServingTarget(
        watch=WatchRef(namespace=namespace, name=name, uid=uid),
        endpoint=endpoint,
        credentials_secret=secret,
        image=serving.image or training_image or settings.default_image,
        serving=serving,
    )


# ------------------------------------------------------------------------------ names


def _hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def serving_name(watch: str) -> str:
    """`<watch>-serving`, or a valid, stable stand-in when that is not a DNS-1035 label.

    Service names must be DNS-1035 labels (<= 63 chars, start with a letter, no dots) while
    watch names are DNS-1123 subdomains (<= 253 chars, dots, may start with a digit).
    """
    base = f"{watch}-serving"
    if len(base) <= 63 and _DNS1035.fullmatch(base):
        return base
    cleaned = re.sub(r"[^a-z0-9-]+", "-", watch.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "w-" + cleaned
    stem = cleaned[: 63 - len("-serving") - 9].rstrip("-")
    return f"{stem}-{_hash(watch)}-serving"


def label_value(text: str) -> str:
    """A label value (<= 63 chars) standing for `text`; long names get a hash suffix."""
    if len(text) <= 63:
        return text
    return f"{text[:54].rstrip('.-_')}-{_hash(text)}"


def selector_labels(watch: str) -> dict[str, str]:
    """The Deployment's (immutable) pod selector and the Service's selector."""
    return {LABEL_NAME: SERVING_APP, LABEL_INSTANCE: label_value(watch)}


def object_labels(watch: str) -> dict[str, str]:
    return {
        **selector_labels(watch),
        LABEL_COMPONENT: "serving",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_WATCH: label_value(watch),
    }


# ------------------------------------------------------------------------------ releases


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); ValueError when it is not one."""
    m = re.fullmatch(r"s3://([^/\s]+)/(\S+)", uri)
    if not m:
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return m.group(1), m.group(2)


@dataclass(frozen=True)
class Release:
    """One servable Bento: what a promoted run produced."""

    bento_uri: str
    model_version: str
    model_name: str = ""

    @classmethod
    def from_result(cls, result: TrainResult) -> Release:
        """The release of a promoted result; ServingSpecError names a missing field."""
        uri = str(result.bentoUri or "")
        try:
            parse_s3_uri(uri)
        except ValueError as exc:
            raise ServingSpecError(f"result.bentoUri: {exc}") from None
        version = str(result.modelVersion or "")
        if not version:
            raise ServingSpecError("result.modelVersion is empty for a promoted result")
        return cls(bento_uri=uri, model_version=version, model_name=str(result.modelName or ""))

    def describe(self) -> str:
        who = f"{self.model_name} " if self.model_name else "model "
        return f"{who}v{self.model_version} ({self.bento_uri})"


class Phase(StrEnum):
    PROGRESSING = "Progressing"
    AVAILABLE = "Available"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


#: Phases whose current release is known to serve (a valid rollback target later).
PROVEN = (Phase.AVAILABLE, Phase.ROLLED_BACK)


@dataclass(frozen=True)
class RolloutState:
    """What the Deployment is set to serve and what to fall back to (its annotations)."""

    current: Release
    phase: Phase
    started: str
    """RFC 3339 time the current phase's rollout began."""
    previous: Release | None = None
    rolled_back_from: Release | None = None
    message: str = ""
    """Why the last rollback or failure happened, for the status condition."""

    def annotations(self) -> dict[str, str]:
        ann = {
            ANN_MODEL_NAME: self.current.model_name,
            ANN_MODEL_VERSION: self.current.model_version,
            ANN_BENTO_URI: self.current.bento_uri,
            ANN_PHASE: str(self.phase),
            ANN_STARTED: self.started,
        }
        if self.previous:
            ann[ANN_PREVIOUS_BENTO_URI] = self.previous.bento_uri
            ann[ANN_PREVIOUS_MODEL_VERSION] = self.previous.model_version
        if self.rolled_back_from:
            ann[ANN_ROLLED_BACK_FROM] = self.rolled_back_from.bento_uri
            ann[ANN_ROLLED_BACK_FROM_VERSION] = self.rolled_back_from.model_version
        if self.message:
            ann[ANN_MESSAGE] = self.message[:1000]
        return ann

    @classmethod
    def from_annotations(cls, ann: Mapping[str, str] | None) -> RolloutState | None:
        """The state recorded on a live Deployment, or None if it carries none."""
        ann = ann or {}
        uri = ann.get(ANN_BENTO_URI, "")
        if not uri:
            return None
        name = ann.get(ANN_MODEL_NAME, "")
        try:
            phase = Phase(ann.get(ANN_PHASE, Phase.PROGRESSING))
        except ValueError:
            phase = Phase.PROGRESSING
        prev_uri = ann.get(ANN_PREVIOUS_BENTO_URI, "")
        failed_uri = ann.get(ANN_ROLLED_BACK_FROM, "")
        return cls(
            current=Release(uri, ann.get(ANN_MODEL_VERSION, ""), name),
            phase=phase,
            started=ann.get(ANN_STARTED, ""),
            previous=(
                Release(prev_uri, ann.get(ANN_PREVIOUS_MODEL_VERSION, ""), name)
                if prev_uri
                else None
            ),
            rolled_back_from=(
                Release(failed_uri, ann.get(ANN_ROLLED_BACK_FROM_VERSION, ""), name)
                if failed_uri
                else None
            ),
            message=ann.get(ANN_MESSAGE, ""),
        )


def state_from_status(status: Mapping[str, Any] | None, now: str) -> RolloutState | None:
    """The state to re-create a deleted Deployment from the watch's `status.serving`.

    The Deployment's annotations are the source of truth; when the Deployment itself is
    gone (deleted by hand), the last reported status is the best record left. The release
    restarts as Progressing, so a Bento that no longer comes up falls back to the previous.
    """
    if not status or not status.get("bentoUri") or not status.get("modelVersion"):
        return None
    name = str(status.get("modelName") or "")
    prev_uri = str(status.get("previousBentoUri") or "")
    return RolloutState(
        current=Release(str(status["bentoUri"]), str(status["modelVersion"]), name),
        phase=Phase.PROGRESSING,
        started=now,
        previous=(
            Release(prev_uri, str(status.get("previousModelVersion") or ""), name)
            if prev_uri
            else None
        ),
    )


# ------------------------------------------------------------------------------ builders


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
    digest = _hash(json.dumps([stateless, service, ingress], sort_keys=True), 16)
    deployment["metadata"]["annotations"][ANN_SPEC_HASH] = digest
    return DesiredObjects(deployment, service, ingress, digest)


# ------------------------------------------------------------------------------ observing


def _condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in _get(obj, "status.conditions", []) or []:
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond
    return None


@dataclass(frozen=True)
class RolloutObservation:
    """What the Deployment and its ReplicaSets say about the rollout right now."""

    replicas: int
    """Desired (spec.replicas)."""
    total: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    observed: bool = False
    """The controller has seen the current generation (status is about this template)."""
    complete: bool = False
    """Every desired pod runs the current template and is available; no old pods remain."""
    deadline_exceeded: bool = False
    """The controller reports Progressing=False/ProgressDeadlineExceeded for this template."""
    deadline_message: str = ""
    new_replicaset: str = ""
    new_available: int = 0
    old_available: int = 0
    """Available pods of older ReplicaSets: the previous model still serving."""


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = _get(obj, "metadata.ownerReferences", []) or []
    return any(isinstance(r, Mapping) and r.get("uid") == uid for r in refs)


def observe(
    deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]] = ()
) -> RolloutObservation:
    """Summarize a live Deployment (and the ReplicaSets it owns) like `kubectl rollout status`."""
    replicas = int(_get(deployment, "spec.replicas", 1))
    status = deployment.get("status") or {}
    generation = int(_get(deployment, "metadata.generation", 0))
    observed = int(status.get("observedGeneration") or 0) >= generation
    total = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    complete = observed and updated >= replicas and total == updated and available >= updated
    progressing = _condition(deployment, "Progressing")
    exceeded = bool(
        observed
        and not complete
        and progressing is not None
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    )
    uid = str(_get(deployment, "metadata.uid", ""))
    revision = str(
        (_get(deployment, "metadata.annotations", {}) or {}).get(REVISION_ANNOTATION, "")
    )
    new_rs, new_available, old_available = "", 0, 0
    for rs in replicasets:
        if uid and not _owned_by(rs, uid):
            continue
        rs_revision = str((_get(rs, "metadata.annotations", {}) or {}).get(REVISION_ANNOTATION, ""))
        rs_available = int(_get(rs, "status.availableReplicas", 0) or 0)
        if revision and rs_revision == revision:
            new_rs, new_available = str(_get(rs, "metadata.name", "")), rs_available
        else:
            old_available += rs_available
    return RolloutObservation(
        replicas=replicas,
        total=total,
        updated=updated,
        ready=ready,
        available=available,
        observed=observed,
        complete=complete,
        deadline_exceeded=exceeded,
        deadline_message=str(progressing.get("message", "")) if exceeded and progressing else "",
        new_replicaset=new_rs,
        new_available=new_available,
        old_available=old_available,
    )


# ------------------------------------------------------------------------------ deciding


class Action(StrEnum):
    NONE = "None"
    MARK_AVAILABLE = "MarkAvailable"
    ROLLBACK = "Rollback"
    MARK_FAILED = "MarkFailed"


def decide(state: RolloutState, obs: RolloutObservation) -> Action:
    """What the periodic check must do about the rollout."""
    if obs.complete:
        # Failed -> Available too: a slow Bento that came up after all is serving now.
        return (
            Action.MARK_AVAILABLE
            if state.phase in (Phase.PROGRESSING, Phase.FAILED)
            else Action.NONE
        )
    if obs.deadline_exceeded and state.phase == Phase.PROGRESSING:
        # Only a promotion in flight is rolled back; a stall after a spec edit (phase
        # Available) is reported in the conditions, since going back to an older Bento
        # would not cure it.
        if state.previous and state.previous.bento_uri != state.current.bento_uri:
            return Action.ROLLBACK
        return Action.MARK_FAILED
    return Action.NONE


def now_rfc3339(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def promote(
    state: RolloutState | None,
    obs: RolloutObservation | None,
    release: Release,
    now: str,
) -> RolloutState | None:
    """The state after promoting `release`, or None when the promotion changes nothing."""
    if state is not None:
        if release.bento_uri == state.current.bento_uri:
            return None  # already the Deployment's Bento: a replayed result
        if state.rolled_back_from and release.bento_uri == state.rolled_back_from.bento_uri:
            return None  # this Bento already failed its rollout once
    previous: Release | None = None
    if state is not None:
        proven = state.phase in PROVEN or (obs is not None and obs.complete)
        if proven:
            previous = state.current
        elif state.previous is not None:
            previous = state.previous  # keep the older, proven release as the target
        elif state.phase == Phase.PROGRESSING:
            previous = state.current  # nothing proven yet: the best there is
    return RolloutState(current=release, phase=Phase.PROGRESSING, started=now, previous=previous)


def rollback_message(state: RolloutState, obs: RolloutObservation, deadline: int) -> str:
    detail = f" ({obs.deadline_message})" if obs.deadline_message else ""
    target = state.previous.describe() if state.previous else "nothing"
    return (
        f"{state.current.describe()} was not available within progressDeadlineSeconds={deadline}"
        f"{detail}: new ReplicaSet {obs.new_replicaset or '?'} has {obs.new_available}/"
        f"{obs.replicas} available; rolled back to {target}"
    )


def rolled_back(state: RolloutState, message: str, now: str) -> RolloutState:
    """The state after going back to `state.previous` (which must be set)."""
    if state.previous is None:
        raise ValueError("rollback needs a previous release")
    return RolloutState(
        current=state.previous,
        phase=Phase.ROLLED_BACK,
        started=now,
        previous=None,
        rolled_back_from=state.current,
        message=message,
    )


def failed(state: RolloutState, message: str) -> RolloutState:
    return dataclasses.replace(state, phase=Phase.FAILED, message=message)


def available(state: RolloutState) -> RolloutState:
    # A Bento that rolled out after all clears a failure message; a rollback's stays.
    if state.phase == Phase.FAILED:
        return dataclasses.replace(state, phase=Phase.AVAILABLE, message="")
    return dataclasses.replace(state, phase=Phase.AVAILABLE)


# ------------------------------------------------------------------------------ status


def _cond(ctype: str, status: bool, reason: str, message: str) -> dict[str, str]:
    return {
        "type": ctype,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
    }


def merge_conditions(
    old: Sequence[Mapping[str, Any]] | None, new: Sequence[Mapping[str, str]], now: str
) -> list[dict[str, str]]:
    """New conditions, keeping `lastTransitionTime` of those whose status did not change."""
    before = {c.get("type"): c for c in old or [] if isinstance(c, Mapping)}
    out = []
    for cond in new:
        prior = before.get(cond["type"])
        since = (
            str(prior.get("lastTransitionTime") or now)
            if prior is not None and prior.get("status") == cond["status"]
            else now
        )
        out.append({**cond, "lastTransitionTime": since})
    return out


def serving_status(
    target: ServingTarget,
    state: RolloutState,
    obs: RolloutObservation,
    settings: RolloutSettings,
    *,
    now: str,
    old_status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`status.serving` of the watch, recomputed from the Deployment's state and status."""
    current = state.current
    prev_desc = state.previous.describe() if state.previous else "the previous model"
    conditions = [
        _cond(
            "Available",
            obs.available >= obs.replicas,
            "MinimumReplicasAvailable"
            if obs.available >= obs.replicas
            else "MinimumReplicasUnavailable",
            f"{obs.available}/{obs.replicas} replicas available",
        ),
    ]
    if obs.complete:
        conditions.append(
            _cond(
                "Progressing",
                False,
                "RolloutComplete",
                f"{current.describe()} serves on every replica",
            )
        )
    elif obs.deadline_exceeded:
        conditions.append(
            _cond(
                "Progressing",
                False,
                "ProgressDeadlineExceeded",
                obs.deadline_message or "the new ReplicaSet made no progress within the deadline",
            )
        )
    elif state.phase == Phase.ROLLED_BACK:
        conditions.append(
            _cond(
                "Progressing",
                True,
                "RollingBack",
                f"rolling back to {current.describe()}: {obs.available}/{obs.replicas} available",
            )
        )
    else:
        conditions.append(
            _cond(
                "Progressing",
                True,
                "RollingOut",
                f"rolling out {current.describe()}: {obs.new_available}/{obs.replicas} new replicas "
                f"available; {prev_desc} serves meanwhile ({obs.old_available} available)",
            )
        )
    if state.rolled_back_from is not None:
        conditions.append(_cond("RolledBack", True, "ProgressDeadlineExceeded", state.message))
    elif state.phase == Phase.FAILED:
        conditions.append(_cond("RolledBack", False, "NothingToRollBackTo", state.message))
    else:
        conditions.append(
            _cond("RolledBack", False, "NoRollback", "no rollback since the last promotion")
        )
    old_conditions = (old_status or {}).get("conditions") if old_status else None
    status: dict[str, Any] = {
        "phase": str(state.phase),
        "modelName": current.model_name,
        "modelVersion": current.model_version,
        "bentoUri": current.bento_uri,
        "previousModelVersion": state.previous.model_version if state.previous else "",
        "previousBentoUri": state.previous.bento_uri if state.previous else "",
        "rolledBackFrom": state.rolled_back_from.bento_uri if state.rolled_back_from else "",
        "deployment": target.name,
        "service": target.name,
        "ingress": target.name if target.serving.ingress else "",
        "url": serving_url(target, settings),
        "replicas": obs.replicas,
        "readyReplicas": obs.ready,
        "availableReplicas": obs.available,
        "updatedReplicas": obs.updated,
        "conditions": merge_conditions(old_conditions, conditions, now),
    }
    if state.started:  # a date-time in the CRD schema: omitted rather than empty
        status["rolloutStarted"] = state.started
    return status


# ------------------------------------------------------------------------------ Bento history


@dataclass(frozen=True)
class StoredObject:
    key: str
    last_modified: float
    """Seconds since the epoch."""


def bentos_to_delete(
    objects: Iterable[StoredObject],
    *,
    current: Release,
    previous: Release | None,
    limit: int,
) -> list[str]:
    """Keys of `.bento` objects of the current model beyond `limit`, oldest first.

    Only objects in the current Bento's folder named `<stem>-<version>.bento` with the
    current Bento's stem count (other models in a shared bucket are never touched). The
    current and previous Bentos are always kept, then the newest fill up to `limit`.
    Newest is by version number when every version is an integer (MLflow's), else by time.
    """
    _, cur_key = parse_s3_uri(current.bento_uri)
    folder, _, cur_name = cur_key.rpartition("/")
    m = _BENTO_NAME.match(cur_name)
    if not m:
        return []
    stem = m.group("stem")
    prefix = f"{folder}/" if folder else ""
    candidates: list[tuple[StoredObject, str]] = []
    for obj in objects:
        if not obj.key.startswith(prefix) or "/" in obj.key[len(prefix) :]:
            continue
        om = _BENTO_NAME.match(obj.key[len(prefix) :])
        if om and om.group("stem") == stem:
            candidates.append((obj, om.group("version")))
    protected = {cur_key}
    if previous is not None:
        with contextlib.suppress(ValueError):  # a malformed previous URI protects nothing
            protected.add(parse_s3_uri(previous.bento_uri)[1])
    if all(v.isdigit() for _, v in candidates):
        candidates.sort(key=lambda c: (int(c[1]), c[0].last_modified), reverse=True)
    else:
        candidates.sort(key=lambda c: (c[0].last_modified, c[0].key), reverse=True)
    kept = {o.key for o, _ in candidates if o.key in protected}
    for obj, _ in candidates:
        if len(kept) >= limit:
            break
        kept.add(obj.key)
    return [o.key for o, _ in reversed(candidates) if o.key not in kept]
