"""The operator's settings: one typed, frozen object, loaded once at startup.

Every field has a CLI flag and an environment variable (`KUBETRAIN_OPERATOR_<FIELD>`, for
the nested rollout settings `KUBETRAIN_OPERATOR_ROLLOUT_<FIELD>` and `--rollout-<field>`);
the flag wins over the variable, the variable over the default. The parser, its `--help`
and the docs table are generated from the fields' metadata, so each setting's name, type,
default and description live in one place (the field). Fields are grouped the way kopf
groups its own settings (`--help` shows one section per group); the object itself stays
flat, except `rollout`, which is handed to `serving_rollout` as a whole.

Nothing else in the package reads the environment, so what the operator does is fully
described by this object (it is logged once at startup; the only secret, the webhook
token, is env-only and not in its repr; MinIO credentials come from each DatasetWatch's
Secret).

Why one module of this length: over half of it is the fields and their help texts, and the
rest generates the parser, the environment lookup and the docs table from those fields. It
stays one module so that a setting is described in exactly one place.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from typing import Any

ENV_PREFIX = "KUBETRAIN_OPERATOR_"
FAULT_POINTS = ("", "manifest", "status", "job")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: `--help` sections, in order: group key -> title.
GROUPS = {
    "watching": "watching (which DatasetWatches this process serves)",
    "peering": "peering (several replicas, one acting)",
    "detection": "detection (listen stream, webhook mode, resync, status)",
    "training": "training (the Job launched for a watch)",
    "rollout": "serving rollout (Deployment/Service/Ingress of a promoted model)",
    "endpoints": "health and metrics endpoints",
    "webhook": "MinIO webhook receiver",
    "limits": "limits",
    "diagnostics": "diagnostics",
}


def _meta(
    help: str,
    group: str = "",
    *,
    flag: str = "",
    short: str = "",
    env_only: bool = False,
    hidden: bool = False,
    exclusive: bool = False,
    metavar: str = "",
    choices: tuple[str, ...] = (),
    default_text: str = "",
    derived: str = "",
) -> dict[str, Any]:
    """Field metadata: `help` is the field's one description (flag help, docs table).

    `flag` overrides the flag name (default: the field name with `-`); `env_only` means no
    flag (secrets); `hidden` keeps a flag out of `--help`; `exclusive` flags of one group
    are mutually exclusive; `derived` names the top-level field a nested field is copied
    from (it has no flag of its own).
    """
    return {
        "help": " ".join(help.split()),
        "group": group,
        "flag": flag,
        "short": short,
        "env_only": env_only,
        "hidden": hidden,
        "exclusive": exclusive,
        "metavar": metavar,
        "choices": choices,
        "default_text": default_text,
        "derived": derived,
    }


def _default_resources() -> dict[str, dict[str, str]]:
    # TensorFlow + BentoML's runner take ~0.6-1 GiB resident for the MNIST CNN.
    return {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


@dataclass(frozen=True)
class RolloutSettings:
    """Process-wide knobs of the serving rollout (`OperatorSettings.rollout`).

    Constructible on its own with defaults (tests, `serving_rollout` without settings).
    """

    field_manager: str = field(
        default="kubetrain-operator",
        metadata=_meta("Server-side apply field manager that owns the serving objects' fields."),
    )
    default_image: str = field(
        default="kubetrain-trainer:latest",
        metadata=_meta(
            "Image when neither `spec.serving.image` nor `spec.training.image` is set.",
            derived="default_image",
        ),
    )
    run_as_user: int = field(
        default=10001,
        metadata=_meta(
            "UID/GID of the serving container: the trainer image's non-root user.",
            derived="trainer_uid",
        ),
    )
    cluster_domain: str = field(
        default="cluster.local",
        metadata=_meta("DNS suffix of the in-cluster URL reported when there is no Ingress."),
    )
    event_component: str = field(
        default="kubetrain-operator",
        metadata=_meta("`source.component` of the Events emitted about a watch's rollout."),
    )
    bentoml_home: str = field(
        default="/var/lib/bentoml",
        metadata=_meta(
            "Where BENTOML_HOME (an emptyDir: the root filesystem is read-only) is mounted "
            "in serving pods."
        ),
    )
    s3_region: str = field(
        default="us-east-1",
        metadata=_meta("AWS_DEFAULT_REGION of serving pods, for fsspec/s3fs (MinIO's default)."),
    )
    request_timeout_seconds: float = field(
        default=30.0,
        metadata=_meta("Timeout of each Kubernetes/MinIO request made by the rollout."),
    )
    conflict_retries: int = field(
        default=3,
        metadata=_meta(
            "How often a write that lost an optimistic-concurrency race is recomputed and retried."
        ),
    )
    default_resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=_default_resources,
        metadata=_meta(
            "Serving container resources (JSON, keys `requests`/`limits`) when "
            "`spec.serving.resources` is empty."
        ),
    )
    retry_seconds: float = field(
        default=60.0,
        metadata=_meta(
            "After a transient failure to roll out a promoted model (API, network), retry "
            "this long later; training is not affected."
        ),
    )
    check_seconds: float = field(
        default=15.0,
        metadata=_meta(
            "How often a watch's rollout in flight is checked (advanced, or rolled back when "
            "the Deployment misses its progress deadline)."
        ),
    )


@dataclass(frozen=True)
class OperatorSettings:
    """Process-wide configuration of `kubetrain-operator`."""

    namespaces: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "Watch this namespace (repeatable; env: comma-separated). Neither this nor "
            "`--all-namespaces`: the namespace of the pod (env POD_NAMESPACE) or, out of "
            "cluster, `default`.",
            "watching",
            flag="namespace",
            short="-n",
            exclusive=True,
            metavar="NS",
            default_text="$POD_NAMESPACE or default",
        ),
    )
    all_namespaces: bool = field(
        default=False,
        metadata=_meta(
            "Watch DatasetWatches in every namespace (needs cluster-scoped RBAC).",
            "watching",
            short="-A",
            exclusive=True,
        ),
    )
    standalone: bool = field(
        default=False,
        metadata=_meta(
            "Run without kopf peering (development and tests). Production keeps peering on "
            "so two replicas never both act.",
            "peering",
        ),
    )
    peering_name: str = field(
        default="kubetrain",
        metadata=_meta(
            "Name of the KopfPeering (namespaced) / ClusterKopfPeering (cluster-wide) object.",
            "peering",
        ),
    )
    priority: int = field(
        default=0,
        metadata=_meta(
            "kopf peering priority; 0 means random in 1..2^30, so two replicas never tie "
            "(kopf lets equal-priority peers both act, it only warns).",
            "peering",
            default_text="0 (random)",
        ),
    )
    peering_settle_seconds: float = field(
        default=5.0,
        metadata=_meta(
            "With peering, watches start this long after the process does, so that peers "
            "have announced themselves and a lower-priority replica pauses before it acts "
            "at all.",
            "peering",
        ),
    )
    health_host: str = field(
        default="0.0.0.0", metadata=_meta("Address of the liveness endpoint.", "endpoints")
    )
    health_port: int = field(
        default=8080,
        metadata=_meta(
            "Port of the liveness endpoint `GET /healthz` (0 disables it).", "endpoints"
        ),
    )
    metrics_host: str = field(
        default="0.0.0.0", metadata=_meta("Address of the Prometheus endpoint.", "endpoints")
    )
    metrics_port: int = field(
        default=9090,
        metadata=_meta(
            "Port of the Prometheus endpoint `GET /metrics` (0 disables it).", "endpoints"
        ),
    )
    webhook_host: str = field(
        default="0.0.0.0", metadata=_meta("Address of the MinIO webhook receiver.", "webhook")
    )
    webhook_port: int = field(
        default=8081,
        metadata=_meta(
            "Port of the MinIO webhook receiver `POST /minio/events` (0 disables it; watches "
            "with `notifications: Webhook` then rely on resync).",
            "webhook",
        ),
    )
    webhook_path: str = field(
        default="/minio/events",
        metadata=_meta("Path MinIO's webhook target posts to.", "webhook"),
    )
    webhook_arn: str = field(
        default="arn:minio:sqs::KUBETRAIN:webhook",
        metadata=_meta(
            "ARN of the MinIO webhook target (`MINIO_NOTIFY_WEBHOOK_*_KUBETRAIN`) that the "
            "operator subscribes each watched bucket to.",
            "webhook",
        ),
    )
    webhook_token: str = field(
        default="",
        repr=False,
        metadata=_meta(
            "Bearer token MinIO sends (`MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_KUBETRAIN`); env only, "
            "never a flag, never logged. Empty: no check.",
            "webhook",
            env_only=True,
        ),
    )
    source_probe_seconds: float = field(
        default=10.0,
        metadata=_meta(
            "With webhook notifications, how often the bucket is probed (HEAD); an outage "
            "followed by recovery triggers a resync, since events of that window may be lost.",
            "detection",
        ),
    )
    source_settle_seconds: float = field(
        default=5.0,
        metadata=_meta(
            "After such a recovery, re-list once more this long after the first re-listing. "
            "A restarted MinIO brings its notification targets online asynchronously, and "
            "events of writes made in that gap are dropped (no queue dir), after the first "
            "re-listing ran.",
            "detection",
        ),
    )
    default_image: str = field(
        default="kubetrain-trainer:latest",
        metadata=_meta(
            "Trainer image when a DatasetWatch does not set `spec.training.image` (also the "
            "serving image when neither `spec.serving.image` nor that is set).",
            "training",
        ),
    )
    default_mlflow_uri: str = field(
        default="http://mlflow:5000",
        metadata=_meta(
            "MLflow tracking URI when a DatasetWatch does not set "
            "`spec.training.mlflow.trackingUri`.",
            "training",
        ),
    )
    trainer_uid: int = field(
        default=10001,
        metadata=_meta(
            "UID (and GID) the training and serving pods run as: the trainer image's "
            "non-root user; never 0 (PodSecurity `restricted`).",
            "training",
        ),
    )
    tick_seconds: float = field(
        default=0.1,
        metadata=_meta(
            "How often a watch worker drains notifications and re-evaluates its trigger.",
            "detection",
        ),
    )
    status_interval_seconds: float = field(
        default=0.25,
        metadata=_meta(
            "Minimum time between two status patches of one watch (batches bursts of uploads).",
            "detection",
        ),
    )
    job_poll_seconds: float = field(
        default=2.0,
        metadata=_meta(
            "How often the active training Job (and its pod) is read while a run is in flight.",
            "training",
        ),
    )
    listen_ping_seconds: int = field(
        default=5,
        metadata=_meta(
            "MinIO listen stream keep-alive interval (the server sends an empty record this "
            "often).",
            "detection",
        ),
    )
    listen_read_timeout_seconds: float = field(
        default=15.0,
        metadata=_meta(
            "A listen stream silent this long (3 missed pings) is treated as dead and "
            "reconnected; must exceed the ping interval.",
            "detection",
        ),
    )
    listen_backoff_max_seconds: float = field(
        default=30.0,
        metadata=_meta(
            "Upper bound of the exponential reconnect backoff of the listen stream.",
            "detection",
        ),
    )
    s3_timeout_seconds: float = field(
        default=30.0,
        metadata=_meta(
            "Connect/read timeout of ordinary S3 requests (listing, manifests).", "detection"
        ),
    )
    source_retry_max_seconds: float = field(
        default=60.0,
        metadata=_meta(
            "Upper bound of the backoff when a watch's source (Secret, bucket) is unusable.",
            "detection",
        ),
    )
    max_status_labels: int = field(
        default=1000,
        metadata=_meta(
            "Labels listed in `status.labels` at most (the most-changed first); all are counted.",
            "detection",
        ),
    )
    log_level: str = field(
        default="INFO",
        metadata=_meta(
            "Python log level of the operator's own loggers (kopf's: INFO with DEBUG, else "
            "WARNING).",
            "diagnostics",
            choices=LOG_LEVELS,
        ),
    )
    fault_exit_after: str = field(
        default="",
        metadata=_meta(
            "Fault injection for crash tests only: exit the process abruptly (os._exit) "
            "right after this launch step: `manifest`, `status` or `job`. Empty (the default) "
            "disables it.",
            "diagnostics",
            hidden=True,
            choices=FAULT_POINTS,
        ),
    )
    max_watch_threads: int = field(
        default=64,
        metadata=_meta(
            "Size of kopf's thread pool. Each DatasetWatch's daemon holds one thread for its "
            "lifetime, so at most this many watches are served at once; when all are in use "
            "a warning is logged and further watches (and kopf's sync handlers, such as the "
            "liveness probe) wait for a free thread.",
            "limits",
        ),
    )
    drain_limit: int = field(
        default=20000,
        metadata=_meta(
            "Notifications a watch worker applies per tick at most, so a flood cannot starve "
            "status and Job polling.",
            "limits",
        ),
    )
    worker_stuck_seconds: float = field(
        default=600.0,
        metadata=_meta(
            "The liveness probe (`watches`) fails when a watch worker's loop has not turned "
            "for this long.",
            "limits",
        ),
    )
    rollout: RolloutSettings = field(
        default_factory=RolloutSettings,
        metadata=_meta("Serving rollout settings (`--rollout-*` flags).", "rollout"),
    )

    def __post_init__(self) -> None:
        # Nested fields marked `derived` have no flag: they always follow their source field
        # (the serving image and UID are the training ones), whoever builds the object.
        for f in fields(self):
            nested = getattr(self, f.name)
            if not is_dataclass(nested) or isinstance(nested, type):
                continue
            copies = {
                sub.name: getattr(self, sub.metadata["derived"])
                for sub in fields(nested)
                if sub.metadata.get("derived")
            }
            if copies:
                object.__setattr__(self, f.name, replace(nested, **copies))


# ------------------------------------------------------------------- the generated table


@dataclass(frozen=True)
class Option:
    """One setting as the CLI and the environment see it (generated from the fields)."""

    path: tuple[str, ...]
    """Attribute path in `OperatorSettings`, e.g. ("rollout", "check_seconds")."""
    kind: str
    """bool, int, float, str, strs (a tuple of strings) or json (a mapping)."""
    default: Any
    meta: Mapping[str, Any]

    @property
    def dest(self) -> str:
        return "_".join(self.path)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()

    @property
    def flag(self) -> str | None:
        """`--name`, or None for an env-only setting."""
        if self.meta["env_only"]:
            return None
        name = "_".join((*self.path[:-1], self.meta["flag"] or self.path[-1]))
        return "--" + name.replace("_", "-")

    @property
    def help(self) -> str:
        return str(self.meta["help"])

    @property
    def group(self) -> str:
        return str(self.meta["group"])

    def default_text(self) -> str:
        if self.meta["default_text"]:
            return str(self.meta["default_text"])
        if self.kind == "bool":
            return "on" if self.default else "off"
        if self.kind == "json":
            return json.dumps(self.default, separators=(",", ":"))
        if self.default == "":
            return "empty"
        return str(self.default)


_KINDS = {
    "bool": "bool",
    "int": "int",
    "float": "float",
    "str": "str",
    "tuple[str, ...]": "strs",
    "Mapping[str, Mapping[str, str]]": "json",
}


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    assert f.default_factory is not MISSING, f.name
    return f.default_factory()


def options(cls: type = OperatorSettings, prefix: tuple[str, ...] = ()) -> list[Option]:
    """Every setting that has a flag or an env var, in field order (nested ones flattened).

    Derived fields (no flag, no env) are left out; a field type this module cannot parse
    from text is a TypeError (caught by the unit tests).
    """
    out: list[Option] = []
    for f in fields(cls):
        factory = f.default_factory
        if isinstance(factory, type) and is_dataclass(factory):
            out.extend(
                replace(o, meta={**o.meta, "group": o.meta["group"] or f.metadata["group"]})
                for o in options(factory, (*prefix, f.name))
            )
            continue
        if f.metadata.get("derived"):
            continue
        kind = _KINDS.get(str(f.type))
        if kind is None or "help" not in f.metadata:
            raise TypeError(f"setting {f.name}: type {f.type} or its metadata is unsupported")
        out.append(Option((*prefix, f.name), kind, _default(f), f.metadata))
    return out


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _resources(text: str) -> dict[str, dict[str, str]]:
    value = json.loads(text)
    if not isinstance(value, dict) or not all(
        key in ("requests", "limits")
        and isinstance(inner, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in inner.items())
        for key, inner in value.items()
    ):
        raise ValueError(
            'expected a JSON object like {"requests": {"cpu": "250m"}, "limits": {...}}'
        )
    return value


def _resources_flag(text: str) -> dict[str, dict[str, str]]:
    try:
        return _resources(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_text(kind: str, raw: str) -> Any:
    """An env var's text as a value of `kind`; ValueError when it is not one."""
    parsers: dict[str, Callable[[str], Any]] = {
        "bool": _bool,
        "int": int,
        "float": float,
        "str": str,
        "strs": lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        "json": _resources,
    }
    return parsers[kind](raw)


def _metavar(o: Option) -> str:
    if o.meta["metavar"]:
        return str(o.meta["metavar"])
    name = o.path[-1]
    if name.endswith("_seconds"):
        return "SECONDS"
    if name.endswith("_port"):
        return "PORT"
    if name.endswith("_host"):
        return "ADDR"
    return {"int": "N", "float": "X", "str": "TEXT", "json": "JSON"}.get(o.kind, "VALUE")


def build_parser() -> argparse.ArgumentParser:
    """The CLI, generated from `options()`: one section per group, help from the fields."""
    env_only = [o for o in options() if o.flag is None]
    parser = argparse.ArgumentParser(
        prog="kubetrain-operator",
        description=(
            "Watch DatasetWatch resources and their MinIO buckets; launch a training Job when "
            "a label has more than `threshold` changes against the trained snapshot. Every "
            f"flag also reads env {ENV_PREFIX}<FLAG_IN_CAPS> (e.g. {ENV_PREFIX}METRICS_PORT); "
            "the flag wins."
        ),
        epilog="Environment only: " + "; ".join(f"{o.env}: {o.help}" for o in env_only),
    )
    sections = {key: parser.add_argument_group(title) for key, title in GROUPS.items()}
    exclusive: dict[str, Any] = {}
    for o in sorted(options(), key=lambda o: list(GROUPS).index(o.group)):  # usage = --help
        if o.flag is None:
            continue
        section: Any = sections[o.group]
        if o.meta["exclusive"]:
            if o.group not in exclusive:
                exclusive[o.group] = section.add_mutually_exclusive_group()
            section = exclusive[o.group]
        names = [o.flag, o.meta["short"]] if o.meta["short"] else [o.flag]
        text = argparse.SUPPRESS if o.meta["hidden"] else _help(o)
        kwargs: dict[str, Any] = {"dest": o.dest, "default": None, "help": text}
        if o.kind == "bool":
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = _metavar(o)
            if o.kind == "strs":
                kwargs["action"] = "append"
            elif o.kind == "json":
                kwargs["type"] = _resources_flag
            elif o.kind in ("int", "float"):
                kwargs["type"] = int if o.kind == "int" else float
        if o.meta["choices"]:
            kwargs["choices"] = o.meta["choices"]
            kwargs.pop("metavar", None)
        section.add_argument(*names, **kwargs)
    return parser


def _help(o: Option) -> str:
    # argparse treats "%" as a format character in help strings.
    return f"{o.help} [env {o.env}; default: {o.default_text()}]".replace("%", "%%")


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> OperatorSettings:
    """Flags over env over defaults; raises SystemExit (argparse) or ValueError with the name."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[tuple[str, ...], Any] = {}
    for o in options():
        cli = getattr(args, o.dest, None)
        if cli is not None:
            values[o.path] = tuple(cli) if o.kind == "strs" else cli
            continue
        raw = environ.get(o.env)
        if raw is None:
            continue
        try:
            values[o.path] = parse_text(o.kind, raw)
        except ValueError as exc:
            raise ValueError(f"env {o.env}={raw!r}: {exc}") from exc
    top: dict[str, Any] = {path[0]: v for path, v in values.items() if len(path) == 1}
    for f in fields(OperatorSettings):
        nested = {path[1]: v for path, v in values.items() if len(path) == 2 and path[0] == f.name}
        if nested:
            top[f.name] = replace(_default(f), **nested)
    return _validated(OperatorSettings(**top), environ)


def _validated(s: OperatorSettings, environ: Mapping[str, str]) -> OperatorSettings:
    if s.fault_exit_after not in FAULT_POINTS:
        raise ValueError(
            f"fault_exit_after must be one of {FAULT_POINTS}, not {s.fault_exit_after!r}"
        )
    for name in ("health_port", "metrics_port", "webhook_port"):
        port = getattr(s, name)
        if not 0 <= port <= 65535:
            raise ValueError(f"{name} must be 0..65535, not {port}")
    positive = {
        name: getattr(s, name)
        for name in (
            "tick_seconds",
            "status_interval_seconds",
            "job_poll_seconds",
            "listen_read_timeout_seconds",
            "s3_timeout_seconds",
            "source_probe_seconds",
            "source_settle_seconds",
            "worker_stuck_seconds",
            "max_watch_threads",
            "drain_limit",
        )
    }
    for name in ("request_timeout_seconds", "conflict_retries", "retry_seconds", "check_seconds"):
        positive[f"rollout_{name}"] = getattr(s.rollout, name)
    for name, value in positive.items():
        if value <= 0:
            raise ValueError(f"{name} must be > 0, not {value}")
    if not 1 <= s.trainer_uid <= 2**31 - 1:
        # UID 0 would make every training and serving pod fail PodSecurity "restricted"
        # (and `runAsNonRoot` makes the kubelet refuse to start it).
        raise ValueError(f"trainer_uid must be a non-root UID (1..2147483647), not {s.trainer_uid}")
    if not s.webhook_path.startswith("/"):
        raise ValueError(f"webhook_path must start with '/', not {s.webhook_path!r}")
    if s.listen_ping_seconds < 1:
        raise ValueError("listen_ping_seconds must be >= 1")
    if s.listen_read_timeout_seconds <= s.listen_ping_seconds:
        raise ValueError("listen_read_timeout_seconds must exceed listen_ping_seconds")
    changes: dict[str, Any] = {}
    if s.all_namespaces and s.namespaces:
        raise ValueError("--all-namespaces and --namespace are mutually exclusive")
    if not s.all_namespaces and not s.namespaces:
        changes["namespaces"] = (environ.get("POD_NAMESPACE") or "default",)
    if s.priority == 0:
        # Random and non-zero: kopf pauses the lower-priority peer; equal priorities both act.
        changes["priority"] = random.SystemRandom().randint(1, 2**30)
    if not changes:
        return s
    return replace(s, **changes)


def settings_help_table() -> list[tuple[str, str, str, str, str]]:
    """(group title, flag or "(env only)", env var, default, help) for docs/operator.md;
    like `--help`, without hidden flags."""
    rows = []
    for key, title in GROUPS.items():
        for o in options():
            if o.group == key and not o.meta["hidden"]:
                rows.append((title, o.flag or "(env only)", o.env, o.default_text(), o.help))
    return rows
