"""The operator's settings: one typed, frozen object, loaded once at startup.

Every field has a CLI flag and an environment variable (`KUBETRAIN_OPERATOR_<FIELD>` unless
noted); the flag wins over the variable, the variable over the default. Nothing else in the
package reads the environment, so what the operator does is fully described by this object
(and it is logged once at startup, without secrets: there are none here; MinIO credentials
come from each DatasetWatch's Secret).
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

ENV_PREFIX = "KUBETRAIN_OPERATOR_"


@dataclass(frozen=True)
class OperatorSettings:
    """Process-wide configuration of `kubetrain-operator`."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch (repeat `--namespace`); empty with `all_namespaces` False means
    the namespace of the pod (env POD_NAMESPACE) or, out of cluster, `default`."""

    all_namespaces: bool = False
    """Watch DatasetWatches in every namespace (needs cluster-scoped RBAC)."""

    standalone: bool = False
    """Run without kopf peering (development and tests). Production keeps peering on so two
    replicas never both act."""

    peering_name: str = "kubetrain"
    """Name of the KopfPeering (namespaced) / ClusterKopfPeering (cluster-wide) object."""

    priority: int = 0
    """kopf peering priority; 0 means "random in 1..2^30" so two replicas never tie (kopf
    lets equal-priority peers both act, it only warns)."""

    peering_settle_seconds: float = 5.0
    """With peering, watches start this long after the process does, so that peers have
    announced themselves and a lower-priority replica pauses before it acts at all."""

    health_host: str = "0.0.0.0"
    """Address of the liveness endpoint."""

    health_port: int = 8080
    """Port of the liveness endpoint `GET /healthz` (0 disables it)."""

    metrics_host: str = "0.0.0.0"
    """Address of the Prometheus endpoint."""

    metrics_port: int = 9090
    """Port of the Prometheus endpoint `GET /metrics` (0 disables it)."""

    webhook_host: str = "0.0.0.0"
    """Address of the MinIO webhook receiver."""

    webhook_port: int = 8081
    """Port of the MinIO webhook receiver `POST /minio/events` (0 disables it; watches with
    `notifications: Webhook` then rely on resync)."""

    webhook_path: str = "/minio/events"
    """Path MinIO's webhook target posts to."""

    webhook_arn: str = "arn:minio:sqs::KUBETRAIN:webhook"
    """ARN of the MinIO webhook target (`MINIO_NOTIFY_WEBHOOK_*_KUBETRAIN`) that the operator
    subscribes each watched bucket to."""

    webhook_token: str = field(default="", repr=False)
    """Bearer token MinIO sends (`MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_KUBETRAIN`); env only
    (KUBETRAIN_OPERATOR_WEBHOOK_TOKEN), never a flag, never logged. Empty: no check."""

    source_probe_seconds: float = 10.0
    """With webhook notifications, how often the bucket is probed (HEAD); an outage followed
    by recovery triggers a resync, since events of that window may be lost."""

    source_settle_seconds: float = 5.0
    """After such a recovery, re-list once more this long after the first re-listing. A
    restarted MinIO brings its notification targets online asynchronously, and events of
    writes made in that gap are dropped (no queue dir), after the first re-listing ran."""

    default_image: str = "kubetrain-trainer:latest"
    """Trainer image when a DatasetWatch does not set `spec.training.image`."""

    default_mlflow_uri: str = "http://mlflow:5000"
    """MLflow tracking URI when a DatasetWatch does not set `spec.training.mlflow.trackingUri`."""

    trainer_uid: int = 10001
    """UID (and GID) the training pod runs as; the trainer image's non-root user."""

    tick_seconds: float = 0.1
    """How often a watch worker drains notifications and re-evaluates its trigger."""

    status_interval_seconds: float = 0.25
    """Minimum time between two status patches of one watch (batches bursts of uploads)."""

    job_poll_seconds: float = 2.0
    """How often the active training Job (and its pod) is read while a run is in flight."""

    listen_ping_seconds: int = 5
    """MinIO listen stream keep-alive interval (server sends an empty record this often)."""

    listen_read_timeout_seconds: float = 15.0
    """A listen stream silent this long (3 missed pings) is treated as dead and reconnected."""

    listen_backoff_max_seconds: float = 30.0
    """Upper bound of the exponential reconnect backoff of the listen stream."""

    s3_timeout_seconds: float = 30.0
    """Connect/read timeout of ordinary S3 requests (listing, manifests)."""

    source_retry_max_seconds: float = 60.0
    """Upper bound of the backoff when a watch's source (Secret, bucket) is unusable."""

    max_status_labels: int = 1000
    """Labels listed in `status.labels` at most (the most-changed first); all are counted."""

    log_level: str = "INFO"
    """Python log level of the operator's own loggers."""

    fault_exit_after: str = ""
    """Fault injection for crash tests only: exit the process abruptly (os._exit) right after
    this launch step: `manifest`, `status` or `job`. Empty (the default) disables it."""


FAULT_POINTS = ("", "manifest", "status", "job")


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    return environ.get(ENV_PREFIX + name.upper())


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubetrain-operator",
        description=(
            "Watch DatasetWatch resources and their MinIO buckets; launch a training Job when "
            "a label has more than `threshold` changes against the trained snapshot. Every "
            f"flag also reads env {ENV_PREFIX}<FLAG_IN_CAPS> (e.g. {ENV_PREFIX}METRICS_PORT)."
        ),
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable; env: comma-separated NAMESPACES)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", default=None, help="watch every namespace"
    )
    parser.add_argument(
        "--standalone", action="store_true", default=None, help="no kopf peering (dev/tests)"
    )
    parser.add_argument("--peering-name", help="KopfPeering object name (default kubetrain)")
    parser.add_argument("--priority", type=int, help="peering priority (default: random)")
    parser.add_argument("--peering-settle-seconds", type=float, help="delay before acting (5)")
    parser.add_argument("--health-host")
    parser.add_argument("--health-port", type=int, help="liveness port, /healthz (default 8080)")
    parser.add_argument("--metrics-host")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port, /metrics (default 9090)")
    parser.add_argument("--webhook-host")
    parser.add_argument(
        "--webhook-port", type=int, help="MinIO webhook receiver port (8081; 0 = off)"
    )
    parser.add_argument("--webhook-path", help="webhook path (default /minio/events)")
    parser.add_argument(
        "--webhook-arn", help="MinIO webhook target ARN (arn:minio:sqs::KUBETRAIN:webhook)"
    )
    parser.add_argument("--source-probe-seconds", type=float)
    parser.add_argument("--source-settle-seconds", type=float)
    parser.add_argument("--default-image", help="trainer image when spec.training.image is unset")
    parser.add_argument("--default-mlflow-uri", help="MLflow URI when the watch sets none")
    parser.add_argument("--trainer-uid", type=int, help="UID/GID of the training pod (10001)")
    parser.add_argument("--tick-seconds", type=float)
    parser.add_argument("--status-interval-seconds", type=float)
    parser.add_argument("--job-poll-seconds", type=float)
    parser.add_argument("--listen-ping-seconds", type=int)
    parser.add_argument("--listen-read-timeout-seconds", type=float)
    parser.add_argument("--listen-backoff-max-seconds", type=float)
    parser.add_argument("--s3-timeout-seconds", type=float)
    parser.add_argument("--source-retry-max-seconds", type=float)
    parser.add_argument("--max-status-labels", type=int)
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--fault-exit-after", choices=FAULT_POINTS, help=argparse.SUPPRESS)
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> OperatorSettings:
    """Flags over env over defaults; raises SystemExit (argparse) or ValueError with the name."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}
    for f in fields(OperatorSettings):
        cli = getattr(args, f.name, None)
        if cli is not None:
            values[f.name] = tuple(cli) if f.name == "namespaces" else cli
            continue
        raw = _env(f.name, environ)
        if raw is None:
            continue
        try:
            default = f.default
            if f.name == "namespaces":
                values[f.name] = tuple(ns.strip() for ns in raw.split(",") if ns.strip())
            elif isinstance(default, bool):
                values[f.name] = _bool(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise ValueError(f"env {ENV_PREFIX}{f.name.upper()}={raw!r}: {exc}") from exc
    settings = OperatorSettings(**values)  # type: ignore[arg-type]
    return _validated(settings, environ)


def _validated(s: OperatorSettings, environ: Mapping[str, str]) -> OperatorSettings:
    if s.fault_exit_after not in FAULT_POINTS:
        raise ValueError(
            f"fault_exit_after must be one of {FAULT_POINTS}, not {s.fault_exit_after!r}"
        )
    for name in ("health_port", "metrics_port", "webhook_port"):
        port = getattr(s, name)
        if not 0 <= port <= 65535:
            raise ValueError(f"{name} must be 0..65535, not {port}")
    for name in (
        "tick_seconds",
        "status_interval_seconds",
        "job_poll_seconds",
        "listen_read_timeout_seconds",
        "s3_timeout_seconds",
        "source_probe_seconds",
        "source_settle_seconds",
    ):
        if getattr(s, name) <= 0:
            raise ValueError(f"{name} must be > 0, not {getattr(s, name)}")
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
    changes: dict[str, object] = {}
    if s.all_namespaces and s.namespaces:
        raise ValueError("--all-namespaces and --namespace are mutually exclusive")
    if not s.all_namespaces and not s.namespaces:
        changes["namespaces"] = (environ.get("POD_NAMESPACE") or "default",)
    if s.priority == 0:
        # Random and non-zero: kopf pauses the lower-priority peer; equal priorities both act.
        changes["priority"] = random.SystemRandom().randint(1, 2**30)
    if not changes:
        return s
    return OperatorSettings(**{**{f.name: getattr(s, f.name) for f in fields(s)}, **changes})
