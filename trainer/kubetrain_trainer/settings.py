"""The trainer's one typed settings object, loaded once from environment and arguments.

Every field of `TrainerSettings` has an environment variable (what the operator's Job
sets) and a command-line flag (what a human types); a flag wins over the variable,
the variable over the default. `--help` is generated from the same table, so the
documented name, default and meaning can never drift from what the code reads.

Secrets (the MinIO secret key) are only ever read from the environment — a flag
would put them in the pod spec and `ps` output — and are excluded from `repr()` and
from `public_params()`, which is what gets logged and sent to MLflow.

Parsing errors raise `SettingsError` naming the variable or flag and the bad value;
the CLI turns that into exit code 2 (bad input, do not retry).

Why one module of this length: most of it is the field table, one field per setting
with its variable, flag help and docstring. Splitting the table would split the one
place a reader looks up what the trainer can be told.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from kubetrain_contract.s3 import ACCESS_KEY_ENV, ENDPOINT_ENV, S3ConfigError, S3Connection

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names which and why."""


def _meta(env: str, help: str, *, secret: bool = False, flag: bool = True) -> dict[str, Any]:
    return {"env": env, "help": help, "secret": secret, "flag": flag}


@dataclass(frozen=True)
class TrainerSettings:
    """Everything one training run needs. Build with `load_settings()`."""

    manifest: str = field(
        default="",
        metadata=_meta(
            "KUBETRAIN_MANIFEST",
            "snapshot manifest to train on, s3://<bucket>/<key> (required)",
        ),
    )
    """Where the operator stored the snapshot manifest (`s3://bucket/key`)."""

    minio_endpoint: str = field(
        default="http://127.0.0.1:9000",
        metadata=_meta("MINIO_ENDPOINT", "MinIO/S3 endpoint URL, http(s)://host:port"),
    )
    """S3 endpoint of the watched bucket; the scheme decides TLS."""

    minio_access_key: str = field(
        default="",
        repr=False,
        metadata=_meta("MINIO_ACCESS_KEY", "access key of the bucket's credentials", secret=True),
    )
    """Access key id (from the watch's credentials Secret). Not logged either."""

    minio_secret_key: str = field(
        default="",
        repr=False,
        metadata=_meta(
            "MINIO_SECRET_KEY",
            "secret key (environment only, never a flag)",
            secret=True,
            flag=False,
        ),
    )
    """Secret key (from the watch's credentials Secret). Never logged."""

    mlflow_tracking_uri: str = field(
        default="",
        metadata=_meta("MLFLOW_TRACKING_URI", "MLflow tracking server URI (required)"),
    )
    """MLflow tracking server; artifacts are proxied through it."""

    watch: str = field(
        default="",
        metadata=_meta(
            "KUBETRAIN_WATCH", "<namespace>/<name> of the DatasetWatch (default: from manifest)"
        ),
    )
    """The DatasetWatch this run serves; tagged on the MLflow run."""

    model_name: str = field(
        default="",
        metadata=_meta(
            "KUBETRAIN_MODEL_NAME",
            "registered model name (default: kubetrain-<namespace>-<name> of the watch)",
        ),
    )
    """MLflow registered model that gets the new version and the aliases."""

    experiment: str = field(
        default="",
        metadata=_meta("KUBETRAIN_EXPERIMENT", "MLflow experiment (default: the model name)"),
    )
    """MLflow experiment the run is logged in."""

    epochs: int = field(
        default=25,
        metadata=_meta("KUBETRAIN_EPOCHS", "maximum epochs (early stopping may end sooner)"),
    )
    """Upper bound on epochs, and the length of the cosine learning-rate decay; a
    from-scratch run usually uses them all, a warm start stops early."""

    batch_size: int = field(default=64, metadata=_meta("KUBETRAIN_BATCH_SIZE", "mini-batch size"))
    """Mini-batch size for training and evaluation."""

    learning_rate: float = field(
        default=1e-3,
        metadata=_meta(
            "KUBETRAIN_LEARNING_RATE", "Adam learning rate (a warm start uses a third of it)"
        ),
    )
    """Adam learning rate from scratch; warm starts fine-tune at one third."""

    patience: int = field(
        default=3, metadata=_meta("KUBETRAIN_PATIENCE", "early-stopping patience in epochs")
    )
    """Epochs without validation-loss improvement before stopping (best weights restored)."""

    min_delta: float = field(
        default=0.002,
        metadata=_meta(
            "KUBETRAIN_MIN_DELTA", "early stopping: smallest validation-loss drop that counts"
        ),
    )
    """Validation-loss improvements below this are noise; they do not reset patience."""

    label_smoothing: float = field(
        default=0.1,
        metadata=_meta(
            "KUBETRAIN_LABEL_SMOOTHING", "label smoothing of the training loss (0 to turn it off)"
        ),
    )
    """Spreads this much of each target's probability over the other classes: the model
    stops chasing 100% confidence on the few thousand training digits and generalises
    better (docs/trainer.md)."""

    augment: bool = field(
        default=True,
        metadata=_meta(
            "KUBETRAIN_AUGMENT", "random shift/rotation/zoom while training (true/false)"
        ),
    )
    """Light geometric augmentation; it is what lifts small datasets past 97%."""

    trigger_reason: str = field(
        default="manual",
        metadata=_meta("KUBETRAIN_TRIGGER_REASON", "why the operator started this run (logged)"),
    )
    """Free text from the operator (e.g. which label crossed the threshold)."""

    min_accuracy: float = field(
        default=0.9,
        metadata=_meta("KUBETRAIN_MIN_ACCURACY", "gate: minimum test accuracy to promote (0..1)"),
    )
    """The gate's floor: below it a model is never promoted."""

    tolerance: float = field(
        default=0.005,
        metadata=_meta(
            "KUBETRAIN_TOLERANCE",
            "gate: how much worse than the champion (same test split) is still promoted",
        ),
    )
    """Allowed accuracy drop versus the champion on the same test split."""

    warm_start: bool = field(
        default=True,
        metadata=_meta(
            "KUBETRAIN_WARM_START", "start from the current champion's weights (true/false)"
        ),
    )
    """Continue from the champion's weights when one exists with the same classes."""

    cpu_limit: str = field(
        default="",
        metadata=_meta(
            "KUBETRAIN_CPU_LIMIT",
            "CPU limit sizing TensorFlow's thread pools (e.g. 2, 1500m; default: cgroup cpu.max)",
        ),
    )
    """The container's CPU limit (Downward API `limits.cpu`); empty = read cgroup cpu.max."""

    bento_prefix: str = field(
        default=".kubetrain/bentos/",
        metadata=_meta("KUBETRAIN_BENTO_PREFIX", "bucket prefix Bentos are exported under"),
    )
    """Where promoted Bentos go: `s3://<bucket>/<prefix><model>-<version>.bento`."""

    serving_dir: str = field(
        default="",
        metadata=_meta(
            "KUBETRAIN_SERVING_DIR",
            "build context with bentofile.yaml (default: the serving/ folder next to kubetrain_serving)",
        ),
    )
    """BentoML build context (the repository's serving/ folder)."""

    work_dir: str = field(
        default="",
        metadata=_meta(
            "KUBETRAIN_WORK_DIR", "scratch directory (BentoML home etc.; default: a temp dir)"
        ),
    )
    """Writable scratch space; a fresh temporary directory when empty."""

    termination_log: str = field(
        default="/dev/termination-log",
        metadata=_meta(
            "KUBETRAIN_TERMINATION_LOG", "where the result JSON goes (stdout if not writable)"
        ),
    )
    """The pod's termination-message path; outside Kubernetes usually not writable."""

    download_workers: int = field(
        default=16, metadata=_meta("KUBETRAIN_DOWNLOAD_WORKERS", "parallel object downloads")
    )
    """Threads fetching objects; I/O bound, so more than the cores."""

    min_images: int = field(
        default=50,
        metadata=_meta(
            "KUBETRAIN_MIN_IMAGES", "fewer usable images than this is bad input (exit 2)"
        ),
    )
    """Refuse to train on (almost) nothing: a dataset this small is a mistake, not a model."""

    seed: int = field(default=1234, metadata=_meta("KUBETRAIN_SEED", "random seed"))
    """Seeds weight init, shuffling and augmentation (runs are reproducible up to TF kernels)."""

    def public_params(self) -> dict[str, str]:
        """Settings safe to log and to send to MLflow (no secrets)."""
        out: dict[str, str] = {}
        for f in fields(self):
            if f.metadata.get("secret"):
                continue
            out[f.name] = str(getattr(self, f.name))
        return out

    def manifest_location(self) -> tuple[str, str]:
        """(bucket, key) of the manifest URI; raises SettingsError when malformed."""
        return parse_s3_uri(self.manifest, what="--manifest / KUBETRAIN_MANIFEST")

    def s3_connection(self) -> S3Connection:
        """Endpoint and keys for `snapshot.make_client`; S3ConfigError names a bad setting."""
        return S3Connection.from_env(
            {},
            endpoint=self.minio_endpoint.strip(),
            access_key=self.minio_access_key,
            secret_key=self.minio_secret_key,
            flags={ENDPOINT_ENV: "--minio-endpoint", ACCESS_KEY_ENV: "--minio-access-key"},
        )


def parse_s3_uri(uri: str, *, what: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into (bucket, key)."""
    m = re.fullmatch(r"s3://([^/]+)/(.+)", uri.strip())
    if not m:
        raise SettingsError(f"{what}: expected s3://<bucket>/<key>, got {uri!r}")
    bucket = m.group(1)
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or ".." in bucket:
        raise SettingsError(f"{what}: {bucket!r} is not a valid bucket name")
    return bucket, m.group(2)


def _convert(f_name: str, typ: Any, raw: str, source: str) -> Any:
    if typ in (bool, "bool"):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise SettingsError(f"{source}: expected true or false, got {raw!r}")
    if typ in (int, "int"):
        try:
            return int(raw.strip())
        except ValueError:
            raise SettingsError(f"{source}: expected an integer, got {raw!r}") from None
    if typ in (float, "float"):
        try:
            return float(raw.strip())
        except ValueError:
            raise SettingsError(f"{source}: expected a number, got {raw!r}") from None
    return raw


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """The CLI parser; every flag's help names its environment variable and default."""
    parser = argparse.ArgumentParser(
        prog="kubetrain-train",
        description=(
            "Train a digit classifier on exactly one snapshot of a DatasetWatch's bucket, "
            "log it to MLflow, gate it against the champion and, when promoted, export a "
            "BentoML Bento to the bucket. Every option can also be set by the environment "
            "variable named in its help; a flag wins. The result is one JSON object in the "
            "termination log. Exit codes: 0 done (promoted or not), 2 bad input (do not "
            "retry), 75 transient failure (retry)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="MINIO_SECRET_KEY is read from the environment only (never a flag).",
    )
    for f in fields(TrainerSettings):
        meta = f.metadata
        if not meta.get("flag", True):
            continue
        parser.add_argument(
            _flag(f.name),
            dest=f.name,
            default=None,
            metavar=meta["env"],
            help=f"{meta['help']} [env {meta['env']}; default: {f.default!r}]",
        )
    return parser


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> TrainerSettings:
    """Read flags over environment over defaults, convert, and validate."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for f in fields(TrainerSettings):
        meta = f.metadata
        raw = getattr(args, f.name, None)
        source = _flag(f.name)
        if raw is None and meta["env"] in env:
            raw = env[meta["env"]]
            source = meta["env"]
        if raw is None:
            continue
        values[f.name] = _convert(f.name, f.type, raw, source)
    settings = TrainerSettings(**values)
    validate(settings)
    return _with_defaults(settings)


def validate(s: TrainerSettings) -> None:
    """Raise SettingsError on the first setting that cannot work."""
    if not s.manifest:
        raise SettingsError("--manifest / KUBETRAIN_MANIFEST is required (s3://<bucket>/<key>)")
    s.manifest_location()
    try:
        s.s3_connection()  # the endpoint's shape and both keys (kubetrain_contract.s3)
    except S3ConfigError as exc:
        raise SettingsError(str(exc)) from None
    if not s.mlflow_tracking_uri:
        raise SettingsError("MLFLOW_TRACKING_URI / --mlflow-tracking-uri is required")
    checks: list[tuple[bool, str]] = [
        (s.epochs >= 1, f"KUBETRAIN_EPOCHS must be >= 1, got {s.epochs}"),
        (s.batch_size >= 1, f"KUBETRAIN_BATCH_SIZE must be >= 1, got {s.batch_size}"),
        (s.learning_rate > 0, f"KUBETRAIN_LEARNING_RATE must be > 0, got {s.learning_rate}"),
        (
            0 <= s.label_smoothing < 1,
            f"KUBETRAIN_LABEL_SMOOTHING must be in [0, 1), got {s.label_smoothing}",
        ),
        (s.patience >= 0, f"KUBETRAIN_PATIENCE must be >= 0, got {s.patience}"),
        (s.min_delta >= 0, f"KUBETRAIN_MIN_DELTA must be >= 0, got {s.min_delta}"),
        (
            0.0 <= s.min_accuracy <= 1.0,
            f"KUBETRAIN_MIN_ACCURACY must be in [0, 1], got {s.min_accuracy}",
        ),
        (0.0 <= s.tolerance <= 1.0, f"KUBETRAIN_TOLERANCE must be in [0, 1], got {s.tolerance}"),
        (
            1 <= s.download_workers <= 256,
            f"KUBETRAIN_DOWNLOAD_WORKERS must be 1..256, got {s.download_workers}",
        ),
        (s.min_images >= 1, f"KUBETRAIN_MIN_IMAGES must be >= 1, got {s.min_images}"),
    ]
    for ok, message in checks:
        if not ok:
            raise SettingsError(message)
    if s.watch and not re.fullmatch(r"[a-z0-9.-]+/[a-z0-9.-]+", s.watch):
        raise SettingsError(f"KUBETRAIN_WATCH: expected <namespace>/<name>, got {s.watch!r}")
    if s.cpu_limit:
        from kubetrain_trainer.resources import parse_cpu_quantity

        try:
            parse_cpu_quantity(s.cpu_limit)
        except ValueError as exc:
            raise SettingsError(f"KUBETRAIN_CPU_LIMIT: {exc}") from None


def _with_defaults(s: TrainerSettings) -> TrainerSettings:
    """Fill the defaults that derive from other fields (model name from the watch)."""
    from dataclasses import replace

    model_name = s.model_name
    if not model_name and s.watch:
        model_name = "kubetrain-" + s.watch.replace("/", "-")
    experiment = s.experiment or model_name
    return replace(s, model_name=model_name, experiment=experiment)


def settings_help_table() -> list[tuple[str, str, str, str]]:
    """(flag, env var, default, help) for docs/trainer.md."""
    rows = []
    for f in fields(TrainerSettings):
        meta = f.metadata
        flag = _flag(f.name) if meta.get("flag", True) else "(env only)"
        rows.append((flag, meta["env"], repr(f.default), meta["help"]))
    return rows
