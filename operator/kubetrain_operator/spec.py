"""Typed view of a DatasetWatch's `spec`, parsed once per generation.

The CRD's OpenAPI schema applies the defaults and its CEL rules reject bad specs at the
apiserver; this module repeats the defaults (so an object created before a CRD upgrade still
works) and raises `SpecError` naming the field for anything the schema could not catch.
Pure: no Kubernetes or S3 I/O.

This is the one model of the spec, `spec.serving` included (`ServingSpec`, read by the
serving rollout). A bad `spec.serving` does not make the whole watch invalid: it is kept
as `WatchSpec.serving_problem` (a `ServingSpecError` message) and only the rollout refuses
to act on it, so detection and training go on (the CRD schema normally rejects it first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kubetrain_contract as contract
from kubetrain_contract.s3 import S3ConfigError, parse_endpoint

# Re-exported: the CRD's names were defined here first and are still imported from here.
from kubetrain_operator.constants import API_VERSION as API_VERSION
from kubetrain_operator.constants import GROUP as GROUP
from kubetrain_operator.constants import KIND as KIND
from kubetrain_operator.constants import PLURAL as PLURAL
from kubetrain_operator.constants import VERSION as VERSION

#: Duration strings, the subset of Go's time.ParseDuration that the CRD pattern admits
#: (and CEL's duration() understands): "500ms", "10s", "5m", "1h30m", "1.5h".
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

NOTIFICATION_MODES = ("Webhook", "Listen", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_HOST = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PATH = re.compile(r"^/[^\s?#]*$")


class SpecError(ValueError):
    """A DatasetWatch spec the operator cannot act on; the message names the field."""


class ServingSpecError(SpecError):
    """A `spec.serving` (or result) the operator cannot roll out; the message names the field."""


def parse_duration(text: str, *, field_name: str = "duration") -> float:
    """Seconds in a duration string such as "5m" or "1h30m"; SpecError names the field."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise SpecError(
            f"{field_name}: {text!r} is not a duration; use digits with ms/s/m/h, e.g. 30s, 5m, 1h30m"
        )
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


@dataclass(frozen=True)
class SourceSpec:
    endpoint: str
    """`http(s)://host:port` of the S3/MinIO endpoint (kubetrain_contract.s3.parse_endpoint)."""
    bucket: str
    prefix: str
    """Possibly empty; a label is the first path segment under it."""
    include: str
    """fnmatch glob over the key relative to `prefix` (`*` also matches `/`)."""
    credentials_secret: str
    """Secret with keys `accessKey` and `secretKey` in the watch's namespace."""


@dataclass(frozen=True)
class TriggerSpec:
    threshold: int = 200
    debounce: float = 10.0
    cooldown: float = 60.0
    max_delay: float = 600.0
    initial_training: bool = True


@dataclass(frozen=True)
class DetectionSpec:
    resync_interval: float = 300.0
    notifications: str = "Webhook"
    """Webhook (MinIO pushes events to the operator), Listen (MinIO listen stream) or None."""


@dataclass(frozen=True)
class MlflowSpec:
    tracking_uri: str = ""
    experiment: str = ""
    model_name: str = ""


@dataclass(frozen=True)
class TrainingSpec:
    image: str = ""
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Any] = field(default_factory=dict)
    backoff_limit: int = 2
    active_deadline_seconds: int | None = 3600
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    epochs: int = 25
    batch_size: int = 64
    min_accuracy: float = 0.8
    tolerance: float = 0.01
    warm_start: bool = False
    service_account_name: str = ""
    job_history_limit: int = 3
    mlflow: MlflowSpec = field(default_factory=MlflowSpec)


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
class WatchSpec:
    namespace: str
    name: str
    uid: str
    generation: int
    source: SourceSpec
    trigger: TriggerSpec
    detection: DetectionSpec
    training: TrainingSpec
    suspend: bool = False
    serving: ServingSpec = field(default_factory=ServingSpec)
    serving_problem: str = ""
    """Why `spec.serving` is invalid ("" if it is valid; `serving` is then the defaults):
    the rollout raises it as a ServingSpecError, the rest of the watch carries on."""

    @property
    def watch_id(self) -> str:
        """`<namespace>/<name>`, as KUBETRAIN_WATCH and the manifest's `watch` field."""
        return f"{self.namespace}/{self.name}"

    @property
    def snapshot_dir(self) -> str:
        """The `<ns>-<watch>` directory name used by `contract.manifest_key`."""
        return f"{self.namespace}-{self.name}"

    @property
    def model_name(self) -> str:
        return self.training.mlflow.model_name or self.name

    @property
    def experiment(self) -> str:
        return self.training.mlflow.experiment or self.name

    def source_fingerprint(self) -> tuple[object, ...]:
        """What, when changed, requires a fresh listing and a new listen stream."""
        return (
            self.source.endpoint,
            self.source.bucket,
            self.source.prefix,
            self.source.include,
            self.source.credentials_secret,
            self.detection.notifications,
        )


def _get(obj: Mapping[str, Any], path: str, default: Any) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur or cur[part] is None:
            return default
        cur = cur[part]
    return cur


def _typed(
    value: Any,
    kind: type | tuple[type, ...],
    where: str,
    error: type[SpecError] = SpecError,
) -> Any:
    """`value` if it is a `kind` (a bool is no number), else `error` naming the field."""
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise error(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, bool) and kind in (float, (int, float)):
        raise error(f"{where}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        raise error(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _int_in(spec: Mapping[str, Any], path: str, default: int, low: int, high: int) -> int:
    value: int = _typed(_get(spec, path, default), int, f"spec.{path}", ServingSpecError)
    if not low <= value <= high:
        raise ServingSpecError(f"spec.{path}: {value} is out of range [{low}, {high}]")
    return value


def _resources(raw: Any) -> dict[str, Any]:
    _typed(raw, Mapping, "spec.serving.resources", ServingSpecError)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in ("requests", "limits", "claims"):
            raise ServingSpecError(
                f"spec.serving.resources.{key}: unknown key (use requests and limits)"
            )
        kind = Mapping if key != "claims" else list
        _typed(value, kind, f"spec.serving.resources.{key}", ServingSpecError)
        out[key] = dict(value) if isinstance(value, Mapping) else list(value)
    return out


def _ingress(raw: Any) -> IngressSpec | None:
    if raw is None:
        return None
    _typed(raw, Mapping, "spec.serving.ingress", ServingSpecError)

    def s(key: str, default: str) -> str:
        value: str = _typed(
            _get(raw, key, default), str, f"spec.serving.ingress.{key}", ServingSpecError
        )
        return value

    host = s("host", "")
    if not host or len(host) > 253 or not _HOST.fullmatch(host):
        raise ServingSpecError(
            f"spec.serving.ingress.host: {host!r} must be a DNS name such as model.example.com"
        )
    path = s("path", "/") or "/"
    if not _PATH.fullmatch(path):
        raise ServingSpecError(
            f"spec.serving.ingress.path: {path!r} must start with '/' (no spaces, '?' or '#')"
        )
    return IngressSpec(
        host=host,
        path=path,
        class_name=s("className", ""),
        tls_secret_name=s("tlsSecretName", ""),
    )


def parse_serving(spec: Mapping[str, Any]) -> ServingSpec:
    """Parse `spec.serving` of a DatasetWatch spec; ServingSpecError names a bad field."""

    def s(path: str, default: Any, kind: type = str) -> Any:
        return _typed(_get(spec, path, default), kind, f"spec.{path}", ServingSpecError)

    s("serving", {}, Mapping)
    ingress = _ingress(_get(spec, "serving.ingress", None))
    policy = s("serving.imagePullPolicy", "IfNotPresent")
    if policy not in PULL_POLICIES:
        raise ServingSpecError(
            f"spec.serving.imagePullPolicy: {policy!r} must be one of {', '.join(PULL_POLICIES)}"
        )
    return ServingSpec(
        enabled=s("serving.enabled", True, bool),
        image=s("serving.image", ""),
        image_pull_policy=policy,
        replicas=_int_in(spec, "serving.replicas", 1, 1, 100),
        # A non-root container without capabilities cannot bind below 1024.
        port=_int_in(spec, "serving.port", 3000, 1024, 65535),
        resources=_resources(_get(spec, "serving.resources", {})),
        history_limit=_int_in(spec, "serving.historyLimit", 5, 1, 100),
        progress_deadline_seconds=_int_in(spec, "serving.progressDeadlineSeconds", 600, 5, 86400),
        ingress=ingress,
    )


def parse_watch(body: Mapping[str, Any]) -> WatchSpec:
    """Parse a DatasetWatch object (kopf body or API dict); SpecError names the bad field."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "")
    if not name or not namespace:
        raise SpecError("metadata.name and metadata.namespace are required")

    def s(path: str, default: Any, kind: type | tuple[type, ...] = str) -> Any:
        return _typed(_get(spec, path, default), kind, f"spec.{path}")

    try:
        endpoint = parse_endpoint(s("source.endpoint", ""), "spec.source.endpoint")
    except S3ConfigError as exc:
        raise SpecError(str(exc)) from None
    bucket = s("source.bucket", "")
    if not bucket:
        raise SpecError("spec.source.bucket is required")
    prefix = s("source.prefix", "")
    if prefix.startswith("/") or prefix.startswith(contract.RESERVED_PREFIX):
        raise SpecError(
            f"spec.source.prefix: {prefix!r} must not start with '/' or {contract.RESERVED_PREFIX!r}"
        )
    secret = s("source.credentialsSecretRef.name", "")
    if not secret:
        raise SpecError("spec.source.credentialsSecretRef.name is required")
    source = SourceSpec(
        endpoint=endpoint,
        bucket=bucket,
        prefix=prefix,
        include=s("source.include", "*.png") or "*",
        credentials_secret=secret,
    )

    threshold = s("trigger.threshold", 200, int)
    if threshold < 1:
        raise SpecError(f"spec.trigger.threshold: must be >= 1, got {threshold}")
    debounce = parse_duration(s("trigger.debounce", "10s"), field_name="spec.trigger.debounce")
    max_delay = parse_duration(s("trigger.maxDelay", "10m"), field_name="spec.trigger.maxDelay")
    if debounce > max_delay:
        raise SpecError("spec.trigger.debounce must not exceed spec.trigger.maxDelay")
    trigger = TriggerSpec(
        threshold=threshold,
        debounce=debounce,
        cooldown=parse_duration(s("trigger.cooldown", "1m"), field_name="spec.trigger.cooldown"),
        max_delay=max_delay,
        initial_training=s("trigger.initialTraining", True, bool),
    )
    resync = parse_duration(
        s("detection.resyncInterval", "5m"), field_name="spec.detection.resyncInterval"
    )
    if resync < 2:
        raise SpecError("spec.detection.resyncInterval must be at least 2s")
    mode = _get(spec, "detection.notifications", "Webhook")
    if isinstance(mode, bool):  # tolerate the boolean spelling
        mode = "Webhook" if mode else "None"
    modes = {m.lower(): m for m in NOTIFICATION_MODES}
    if not isinstance(mode, str) or mode.lower() not in modes:
        raise SpecError(
            f"spec.detection.notifications: {mode!r} must be one of {', '.join(NOTIFICATION_MODES)}"
        )
    detection = DetectionSpec(resync_interval=resync, notifications=modes[mode.lower()])

    deadline = _get(spec, "training.activeDeadlineSeconds", 3600)
    if deadline is not None:
        _typed(deadline, int, "spec.training.activeDeadlineSeconds")
    tolerations = s("training.tolerations", [], list)
    for i, tol in enumerate(tolerations):
        _typed(tol, Mapping, f"spec.training.tolerations[{i}]")
    node_selector = s("training.nodeSelector", {}, Mapping)
    for k, v in node_selector.items():
        _typed(v, str, f"spec.training.nodeSelector.{k}")
    training = TrainingSpec(
        image=s("training.image", ""),
        image_pull_policy=s("training.imagePullPolicy", "IfNotPresent"),
        resources=dict(s("training.resources", {}, Mapping)),
        backoff_limit=s("training.backoffLimit", 2, int),
        active_deadline_seconds=deadline,
        node_selector=dict(node_selector),
        tolerations=tuple(dict(t) for t in tolerations),
        epochs=s("training.epochs", 25, int),
        batch_size=s("training.batchSize", 64, int),
        min_accuracy=float(s("training.minAccuracy", 0.8, (int, float))),
        tolerance=float(s("training.tolerance", 0.01, (int, float))),
        warm_start=s("training.warmStart", False, bool),
        service_account_name=s("training.serviceAccountName", ""),
        job_history_limit=s("training.jobHistoryLimit", 3, int),
        mlflow=MlflowSpec(
            tracking_uri=s("training.mlflow.trackingUri", ""),
            experiment=s("training.mlflow.experiment", ""),
            model_name=s("training.mlflow.modelName", ""),
        ),
    )
    try:
        serving, serving_problem = parse_serving(spec), ""
    except ServingSpecError as exc:
        serving, serving_problem = ServingSpec(), str(exc)
    return WatchSpec(
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        source=source,
        trigger=trigger,
        detection=detection,
        training=training,
        suspend=s("suspend", False, bool),
        serving=serving,
        serving_problem=serving_problem,
    )
