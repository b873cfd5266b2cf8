"""MLflow: the run's record, the model registry and the champion/challenger aliases.

Thin wrappers over the MLflow client that (a) keep the names of tags, params and
artifacts in one place (docs/trainer.md lists them), and (b) turn MLflow's failures
into the trainer's error classes: an unreachable server or a 5xx is `Transient`.

The registry protocol per run:
  1. `mlflow.keras.log_model(..., registered_model_name=name)` creates version N;
  2. alias `challenger` -> N; version tags record accuracy, dataset digest and classes;
  3. after the gate, alias `champion` -> N (only when promoted; otherwise the old
     champion keeps the alias).
The champion is looked up once, by alias, at the start; it is then used by *version*
number so a concurrent promotion cannot swap the model mid-run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from kubetrain_trainer.errors import Transient

CHAMPION = "champion"
CHALLENGER = "challenger"

TAG_WATCH = "kubetrain.watch"
TAG_TRIGGER = "kubetrain.trigger_reason"
TAG_DATASET_DIGEST = "kubetrain.dataset_digest"
TAG_SNAPSHOT_DIGEST = "kubetrain.snapshot_digest"
TAG_MANIFEST_URI = "kubetrain.manifest_uri"
TAG_WARM_START = "kubetrain.warm_start_from"
TAG_PROMOTED = "kubetrain.promoted"
TAG_GATE = "kubetrain.gate"
TAG_CLASSES = "kubetrain.classes"
TAG_SKIPPED = "kubetrain.skipped"


def configure_client_env() -> None:
    """Bound MLflow's HTTP retries so an outage fails the Job in minutes, not hours."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def is_not_found(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str
    classes: list[str] | None
    """The labels of its outputs, in order (None if it predates this tag)."""
    source: str


def find_champion(client: Any, model_name: str) -> Champion | None:
    """The version holding the `champion` alias, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise Transient(f"MLflow: looking up {model_name}@{CHAMPION}: {exc}") from exc
    classes_raw = (mv.tags or {}).get(TAG_CLASSES)
    classes = json.loads(classes_raw) if classes_raw else None
    return Champion(
        version=str(mv.version), run_id=mv.run_id or "", classes=classes, source=mv.source or ""
    )


def load_model_version(model_name: str, version: str) -> Any:
    """Download and load a registered Keras model by version."""
    import mlflow.keras

    try:
        return mlflow.keras.load_model(f"models:/{model_name}/{version}")
    except Exception as exc:  # MLflow raises assorted types for download/IO problems
        raise Transient(f"MLflow: loading {model_name} version {version}: {exc}") from exc


def ensure_experiment(name: str) -> str:
    """The experiment id, creating the experiment on first use."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        exp = mlflow.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(mlflow.create_experiment(name))
        except MlflowException:
            # Another run created it between our get and create.
            exp = mlflow.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)
    except MlflowException as exc:
        raise Transient(f"MLflow: experiment {name!r}: {exc}") from exc


def log_keras_model(model: Any, model_name: str, input_example: Any) -> str:
    """Log the model as the run's `model` artifact and register a new version; returns it."""
    import keras
    import mlflow.keras
    import tensorflow as tf
    from mlflow.models import infer_signature

    probs = model.predict(input_example, verbose=0)
    signature = infer_signature(input_example, probs)
    info = mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        registered_model_name=model_name,
        # Explicit requirements: inference would re-load the model in a subprocess.
        pip_requirements=[f"tensorflow-cpu=={tf.__version__}", f"keras=={keras.__version__}"],
    )
    version = info.registered_model_version
    if version is None:
        raise Transient(f"MLflow did not return a registered version for {model_name}")
    return str(version)


def set_alias(client: Any, model_name: str, alias: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.set_registered_model_alias(model_name, alias, version)
    except MlflowException as exc:
        raise Transient(f"MLflow: setting {model_name}@{alias} -> {version}: {exc}") from exc


def tag_version(client: Any, model_name: str, version: str, tags: dict[str, str]) -> None:
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, v)
