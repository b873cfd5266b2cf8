"""The steps of one training run, in the order `pipeline._run` calls them.

Each step is a small function: the run's `RunContext` (settings, the `TrainResult` being
filled in, stopwatch, figures, phase hook) plus the typed outputs of earlier steps in,
its own typed output back:

    load_snapshot         manifest + verified, decoded images           -> Snapshot
    prepare_data          checks, dataset manifest, model name, split   -> TrainingData
    configure_tensorflow  thread pools, before TensorFlow's first op    -> ThreadPlan
    setup_tracking        MLflow experiment, champion and its model     -> Tracking
    mlflow_run            the MLflow run around the remaining steps     -> run id
    log_inputs            params, tags and input artifacts of the run
    train                 warm start from the champion or from scratch  -> Trained
    evaluate              challenger and champion on one test split     -> Evaluated
    register              metrics, model version, alias challenger      -> Registered
    gate                  the promotion decision, recorded              -> GateDecision
    package_and_promote   [promoted] ONNX + TFLite exports (parity-checked), Bento, alias champion
    finish                status and extra fields of the result

Steps reach their collaborators through what they are given (the MinIO client in
`Snapshot`, the `mlflow` module as `Tracking.api`, the registry client as
`Tracking.client`) or through module attributes (`snap.*`, `trk.*`, `mdl.*`,
`configure_threads`), so a test can hand in small fakes or monkeypatch one attribute.
This module imports neither TensorFlow nor MLflow nor BentoML at import time; only the
steps that need them do, when they run. A step writes into `RunContext.result` as soon
as a field is known, so a run that fails later still reports what it got that far.

Why one module of this length: it is long because there are many steps, not because they
are large (the longest is about 50 lines). One file keeps the run's sequence readable top to
bottom, next to the typed outputs the steps pass on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from kubetrain_contract import SnapshotManifest, TrainResult
from numpy.typing import NDArray

from kubetrain_trainer import model as mdl
from kubetrain_trainer import snapshot as snap
from kubetrain_trainer import tracking as trk
from kubetrain_trainer.errors import BadInput
from kubetrain_trainer.gate import GateDecision, decide
from kubetrain_trainer.logs import log, warn
from kubetrain_trainer.resources import ThreadPlan, configure_threads, plan_threads
from kubetrain_trainer.settings import TrainerSettings
from kubetrain_trainer.split import SPLITS, split_of

if TYPE_CHECKING:
    from minio import Minio

SKIPPED_LIST_LIMIT = 10000
"""At most this many skipped entries go into skipped.json (the count is always exact)."""

SKIPPED_WARNINGS = 20
"""At most this many skipped objects are logged one by one."""


# --- shared state --------------------------------------------------------------------


class Stopwatch:
    """Seconds per named section, in the order the sections ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def time(self, name: str) -> _Lap:
        return _Lap(self, name)


class _Lap:
    def __init__(self, watch: Stopwatch, name: str) -> None:
        self.watch, self.name, self.start = watch, name, 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.watch.timings[self.name] = round(time.perf_counter() - self.start, 3)


@dataclass
class RunContext:
    """What every step shares: the settings in, what the run reports out."""

    settings: TrainerSettings
    result: TrainResult
    """Filled in by the steps as they go; the pipeline sets the reason on failure."""
    scratch: Path
    """The run's scratch directory (BentoML home, the exported Bento)."""
    watch: Stopwatch = field(default_factory=Stopwatch)
    figures: dict[str, float] = field(default_factory=dict)
    """Throughput and accuracy figures for benchmarks (RunReport.figures)."""
    on_phase: Callable[[str], None] | None = None

    def phase(self, name: str, **fields: Any) -> None:
        """Log a phase line and tell the hook (tests, benchmarks) that it was reached."""
        log(name, phase=name, **fields)
        if self.on_phase:
            self.on_phase(name)


# --- what the steps hand on ------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """load_snapshot: what the run was given and what it could use of it."""

    client: Minio
    """The MinIO client that read the snapshot; it also uploads the Bento."""
    manifest_key: str
    manifest: SnapshotManifest
    dataset: snap.LoadedDataset


@dataclass(frozen=True)
class TrainingData:
    """prepare_data: the checked dataset as arrays per split, and what to call the model."""

    model_name: str
    experiment: str
    classes: list[str]
    """Sorted label names; class index i is classes[i]."""
    x: dict[str, NDArray[np.float32]]
    """Split name (train/val/test) -> images (N, 28, 28)."""
    y: dict[str, NDArray[np.int64]]
    """Split name -> class indices."""
    sizes: dict[str, int]


@dataclass(frozen=True)
class Tracking:
    """setup_tracking: where the run is recorded and the champion it competes with."""

    api: Any
    """The `mlflow` module (run-level calls: start_run, log_*, set_tag)."""
    client: Any
    """An `mlflow.MlflowClient` (registry calls: aliases, version tags)."""
    experiment_id: str
    champion: trk.Champion | None
    champion_model: Any
    """The champion's Keras model, None without a champion."""


@dataclass(frozen=True)
class Trained:
    """train: the challenger and how it was trained."""

    net: Any
    warm_from: str
    """The champion version it started from, "" when trained from scratch."""
    learning_rate: float
    fit: mdl.FitReport


@dataclass(frozen=True)
class Evaluated:
    """evaluate: challenger and (if any) champion on the same test split."""

    challenger: mdl.Evaluation
    champion: mdl.Evaluation | None
    challenger_probs: NDArray[np.float32]
    """The challenger's probabilities on the test split (the exports are checked on them)."""

    @property
    def champion_accuracy(self) -> float | None:
        return self.champion.accuracy if self.champion is not None else None


@dataclass(frozen=True)
class Registered:
    """register: the challenger's model version and the MLflow run that logged it."""

    version: str
    run_id: str


# --- pure helpers ------------------------------------------------------------------------


def sort_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), then the rest alphabetically."""
    return sorted(labels, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))


def align_probs(
    probs: NDArray[np.float32], their_classes: list[str] | None, our_classes: list[str]
) -> NDArray[np.float32]:
    """Reorder a model's output columns to `our_classes` (missing classes get 0)."""
    if their_classes is None or their_classes == our_classes:
        if probs.shape[1] == len(our_classes):
            return probs
        their_classes = their_classes or [str(i) for i in range(probs.shape[1])]
    out = np.zeros((probs.shape[0], len(our_classes)), dtype=np.float32)
    index = {c: i for i, c in enumerate(our_classes)}
    for j, c in enumerate(their_classes):
        if c in index and j < probs.shape[1]:
            out[:, index[c]] = probs[:, j]
    return out


def check_dataset(s: TrainerSettings, dataset: snap.LoadedDataset) -> list[str]:
    """The sorted classes, or BadInput when there is too little to train on."""
    if len(dataset.keys) < s.min_images:
        raise BadInput(
            f"only {len(dataset.keys)} usable images in {s.manifest} (minimum {s.min_images}); "
            f"skipped: {dataset.skipped_counts()}"
        )
    classes = sort_labels(set(dataset.labels))
    if len(classes) < 2:
        raise BadInput(f"need at least 2 labels to train a classifier, found {classes}")
    return classes


def resolve_model_name(s: TrainerSettings, manifest: SnapshotManifest) -> str:
    """The setting, else derived from the manifest's watch; BadInput when neither is there."""
    model_name = s.model_name or (
        "kubetrain-" + manifest.watch.replace("/", "-") if manifest.watch else ""
    )
    if not model_name:
        raise BadInput("no model name: set KUBETRAIN_MODEL_NAME or KUBETRAIN_WATCH")
    return model_name


def split_dataset(
    dataset: snap.LoadedDataset, classes: list[str]
) -> tuple[dict[str, NDArray[np.float32]], dict[str, NDArray[np.int64]], dict[str, int]]:
    """Images, class indices and sizes per split; the split of an image is its key's hash."""
    index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([index[lab] for lab in dataset.labels], dtype=np.int64)
    which = np.array([split_of(k) for k in dataset.keys])
    parts = {name: which == name for name in SPLITS}
    x: dict[str, NDArray[np.float32]] = {name: dataset.images[mask] for name, mask in parts.items()}
    y: dict[str, NDArray[np.int64]] = {name: y_all[mask] for name, mask in parts.items()}
    sizes: dict[str, int] = {name: int(mask.sum()) for name, mask in parts.items()}
    return x, y, sizes


def run_name(s: TrainerSettings, snapshot: Snapshot, model_name: str) -> str:
    """The MLflow run's name: the watch (or model) and a short dataset digest."""
    base = s.watch or snapshot.manifest.watch or model_name
    return f"{base.replace('/', '-')}-{snapshot.dataset.digest[7:19]}"


def metric_name(name: str) -> str:
    """MLflow metric names allow alphanumerics, _ - . / and space."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)


# --- the steps -----------------------------------------------------------------------


def load_snapshot(ctx: RunContext, client: Minio, bucket: str, manifest_key: str) -> Snapshot:
    """Read the manifest, then exactly the objects it names (verified and decoded)."""
    s, result = ctx.settings, ctx.result
    with ctx.watch.time("load"):
        manifest = snap.read_manifest(client, bucket, manifest_key)
        result.datasetDigest = manifest.digest
        ctx.phase(
            "snapshot", manifest=s.manifest, objects=len(manifest.objects), digest=manifest.digest
        )
        dataset = snap.load_snapshot(
            client,
            manifest,
            workers=s.download_workers,
            progress=lambda done, total: log("downloading", done=done, total=total),
        )
    result.skipped = len(dataset.skipped)
    result.datasetDigest = dataset.digest
    ctx.figures["load_images_per_second"] = round(dataset.images_per_second, 1)
    ctx.phase(
        "loaded",
        images=len(dataset.keys),
        skipped=dataset.skipped_counts(),
        megabytes=round(dataset.bytes_read / 1e6, 2),
        seconds=round(dataset.seconds, 2),
        images_per_second=ctx.figures["load_images_per_second"],
        dataset_digest=dataset.digest,
    )
    for item in dataset.skipped[:SKIPPED_WARNINGS]:
        warn("skipped object", key=item.key, reason=item.reason, detail=item.detail)
    return Snapshot(client=client, manifest_key=manifest_key, manifest=manifest, dataset=dataset)


def prepare_data(ctx: RunContext, snapshot: Snapshot) -> TrainingData:
    """Check the dataset, store its manifest if it differs, name the model, split by key."""
    s, dataset = ctx.settings, snapshot.dataset
    classes = check_dataset(s, dataset)
    if dataset.digest != snapshot.manifest.digest:
        stored = snap.store_dataset_manifest(snapshot.client, snapshot.manifest_key, dataset)
        ctx.phase("dataset manifest stored", key=stored, digest=dataset.digest)
    model_name = resolve_model_name(s, snapshot.manifest)
    ctx.result.modelName = model_name
    x, y, sizes = split_dataset(dataset, classes)
    ctx.phase("split", **sizes, classes=classes)
    if sizes["train"] == 0 or sizes["test"] == 0:
        raise BadInput(f"dataset too small to split: {sizes}")
    return TrainingData(
        model_name=model_name,
        experiment=s.experiment or model_name,
        classes=classes,
        x=x,
        y=y,
        sizes=sizes,
    )


def configure_tensorflow(ctx: RunContext) -> ThreadPlan:
    """Size TensorFlow's thread pools: TF fixes them at its first op."""
    plan = plan_threads(ctx.settings.cpu_limit)
    with ctx.watch.time("tensorflow_init"):  # importing TensorFlow alone takes seconds
        configure_threads(plan)
    ctx.phase(
        "threads",
        cpu_limit=plan.cpu_limit,
        source=plan.source,
        intra_op=plan.intra_op,
        inter_op=plan.inter_op,
    )
    return plan


def setup_tracking(ctx: RunContext, data: TrainingData) -> Tracking:
    """Point MLflow at the server, ensure the experiment, look up and load the champion."""
    import mlflow
    from mlflow import MlflowClient

    s = ctx.settings
    with ctx.watch.time("mlflow_setup"):
        trk.configure_client_env()
        mlflow.set_tracking_uri(s.mlflow_tracking_uri)
        client = MlflowClient(tracking_uri=s.mlflow_tracking_uri)
        experiment_id = trk.ensure_experiment(data.experiment)
        champion = trk.find_champion(client, data.model_name)
    champion_model = None
    if champion is not None:
        ctx.phase("champion", version=champion.version, run_id=champion.run_id)
        with ctx.watch.time("champion_load"):
            champion_model = trk.load_model_version(data.model_name, champion.version)
    else:
        ctx.phase("champion", version=None)
    return Tracking(
        api=mlflow,
        client=client,
        experiment_id=experiment_id,
        champion=champion,
        champion_model=champion_model,
    )


@contextmanager
def mlflow_run(
    ctx: RunContext, tracking: Tracking, snapshot: Snapshot, data: TrainingData
) -> Iterator[str]:
    """The MLflow run the remaining steps record into; a failure inside ends it as failed."""
    name = run_name(ctx.settings, snapshot, data.model_name)
    with tracking.api.start_run(experiment_id=tracking.experiment_id, run_name=name) as active:
        run_id: str = active.info.run_id
        ctx.result.mlflowRunId = run_id
        ctx.phase("mlflow run", run_id=run_id, experiment=data.experiment)
        yield run_id


def log_inputs(
    ctx: RunContext,
    tracking: Tracking,
    snapshot: Snapshot,
    data: TrainingData,
    plan: ThreadPlan,
) -> None:
    """Record everything the run was given before training starts."""
    s, manifest, dataset, ml = ctx.settings, snapshot.manifest, snapshot.dataset, tracking.api
    with ctx.watch.time("log_inputs"):
        params: dict[str, Any] = {
            k: v
            for k, v in s.public_params().items()
            if k not in ("minio_access_key", "termination_log", "work_dir")
        }
        params.update(
            {
                "model_name": data.model_name,
                "classes": ",".join(data.classes),
                "n_train": data.sizes["train"],
                "n_val": data.sizes["val"],
                "n_test": data.sizes["test"],
                "n_images": len(dataset.keys),
                "n_skipped": len(dataset.skipped),
                "intra_op_threads": plan.intra_op,
                "inter_op_threads": plan.inter_op,
                "dataset_digest": dataset.digest,
            }
        )
        ml.log_params(params)
        ml.set_tags(
            {
                trk.TAG_WATCH: s.watch or manifest.watch,
                trk.TAG_TRIGGER: s.trigger_reason[:5000],
                trk.TAG_DATASET_DIGEST: dataset.digest,
                trk.TAG_SNAPSHOT_DIGEST: manifest.digest,
                trk.TAG_MANIFEST_URI: s.manifest,
                trk.TAG_CLASSES: json.dumps(data.classes),
                trk.TAG_SKIPPED: str(len(dataset.skipped)),
            }
        )
        ml.log_text(manifest.to_json(), "manifest/snapshot.json")
        ml.log_text(dataset.dataset_manifest().to_json(), "manifest/dataset.json")
        ml.log_text(
            json.dumps({"snapshot": manifest.digest, "dataset": dataset.digest}, indent=1),
            "manifest/digest.json",
        )
        ml.log_text(
            json.dumps(
                {
                    "count": len(dataset.skipped),
                    "byReason": dataset.skipped_counts(),
                    "items": [x.to_dict() for x in dataset.skipped[:SKIPPED_LIST_LIMIT]],
                },
                indent=1,
            ),
            "skipped.json",
        )
        ml.log_text(s.trigger_reason, "trigger_reason.txt")
        ml.log_metric("skipped_files", len(dataset.skipped))


def initial_model(s: TrainerSettings, tracking: Tracking, classes: list[str]) -> tuple[Any, str]:
    """(model, champion version it was cloned from): a warm start when allowed and possible."""
    champion, champion_model = tracking.champion, tracking.champion_model
    if s.warm_start and champion_model is not None and champion is not None:
        if champion.classes is not None and champion.classes != classes:
            warn("warm start skipped: classes differ", champion=champion.classes, now=classes)
        else:
            try:
                return mdl.clone_for_warm_start(champion_model, len(classes)), champion.version
            except ValueError as exc:
                warn("warm start skipped: champion incompatible", error=str(exc))
    return mdl.build_model(len(classes), seed=s.seed), ""


def train(ctx: RunContext, tracking: Tracking, snapshot: Snapshot, data: TrainingData) -> Trained:
    """Fit the challenger (a warm start fine-tunes at a third of the learning rate)."""
    s, ml = ctx.settings, tracking.api
    net, warm_from = initial_model(s, tracking, data.classes)
    lr = s.learning_rate / 3 if warm_from else s.learning_rate
    ml.set_tag(trk.TAG_WARM_START, warm_from)
    ml.log_params(
        {
            "warm_start_from": warm_from or "scratch",
            "effective_learning_rate": lr,
            "model_parameters": int(net.count_params()),
        }
    )
    ctx.phase("training", warm_start_from=warm_from or None, epochs=s.epochs, learning_rate=lr)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        ml.log_metrics(metrics, step=epoch)
        log("epoch", epoch=epoch + 1, **{k: round(v, 5) for k, v in metrics.items()})

    with ctx.watch.time("train"):
        fit = mdl.fit(
            net,
            data.x["train"],
            data.y["train"],
            data.x["val"],
            data.y["val"],
            epochs=s.epochs,
            batch_size=s.batch_size,
            learning_rate=lr,
            patience=s.patience,
            min_delta=s.min_delta,
            label_smoothing=s.label_smoothing,
            early_stopping=bool(warm_from),  # from scratch: the whole cosine schedule
            augment=s.augment,
            seed=s.seed,
            on_epoch=on_epoch,
        )
    ctx.figures["train_images_per_second"] = round(fit.images_per_second, 1)
    ctx.figures["epochs_run"] = fit.epochs_run
    ml.log_metrics(
        {
            "epochs_run": fit.epochs_run,
            "best_epoch": fit.best_epoch + 1,
            "train_seconds": fit.seconds,
            "train_images_per_second": fit.images_per_second,
            "load_images_per_second": snapshot.dataset.images_per_second,
        }
    )
    return Trained(net=net, warm_from=warm_from, learning_rate=lr, fit=fit)


def evaluate(
    ctx: RunContext, tracking: Tracking, data: TrainingData, trained: Trained
) -> Evaluated:
    """Challenger and champion on the same test images (champion columns aligned by class)."""
    x_test, y_test, classes = data.x["test"], data.y["test"], data.classes
    champion, champion_model = tracking.champion, tracking.champion_model
    with ctx.watch.time("evaluate"):
        challenger_probs = mdl.predict(trained.net, x_test)
        ev = mdl.evaluate_probs(challenger_probs, y_test, classes)
        champion_eval = None
        if champion_model is not None and champion is not None:
            probs = align_probs(mdl.predict(champion_model, x_test), champion.classes, classes)
            champion_eval = mdl.evaluate_probs(probs, y_test, classes)
    evaluated = Evaluated(challenger=ev, champion=champion_eval, challenger_probs=challenger_probs)
    ctx.result.accuracy = round(ev.accuracy, 6)
    ctx.result.championAccuracy = (
        round(champion_eval.accuracy, 6) if champion_eval is not None else None
    )
    ctx.figures["test_accuracy"] = ev.accuracy
    ctx.phase(
        "evaluated",
        test_accuracy=round(ev.accuracy, 5),
        test_loss=round(ev.loss, 5),
        champion_accuracy=ctx.result.championAccuracy,
        test_images=ev.n,
    )
    return evaluated


def register(
    ctx: RunContext,
    tracking: Tracking,
    data: TrainingData,
    trained: Trained,
    evaluated: Evaluated,
    run_id: str,
) -> Registered:
    """Log the evaluation, register the model as a new version, alias it `challenger`."""
    with ctx.watch.time("log_results"):
        log_evaluation(tracking.api, evaluated, data.classes)
        version = trk.log_keras_model(
            trained.net, data.model_name, data.x["test"][:5][..., np.newaxis]
        )
    ctx.result.modelVersion = version
    trk.set_alias(tracking.client, data.model_name, trk.CHALLENGER, version)
    return Registered(version=version, run_id=run_id)


def gate(
    ctx: RunContext,
    tracking: Tracking,
    snapshot: Snapshot,
    data: TrainingData,
    evaluated: Evaluated,
    registered: Registered,
) -> GateDecision:
    """Decide promotion; record the verdict on the version, the run and the result."""
    s = ctx.settings
    decision = decide(
        evaluated.challenger.accuracy,
        evaluated.champion_accuracy,
        min_accuracy=s.min_accuracy,
        tolerance=s.tolerance,
    )
    ctx.result.reason = decision.reason
    trk.tag_version(
        tracking.client,
        data.model_name,
        registered.version,
        {
            trk.TAG_CLASSES: json.dumps(data.classes),
            trk.TAG_DATASET_DIGEST: snapshot.dataset.digest,
            "test_accuracy": f"{evaluated.challenger.accuracy:.6f}",
            trk.TAG_GATE: decision.reason,
        },
    )
    tracking.api.set_tag(trk.TAG_GATE, decision.reason)
    ctx.phase("gate", version=registered.version, promote=decision.promote, reason=decision.reason)
    return decision


def package_and_promote(
    ctx: RunContext,
    tracking: Tracking,
    snapshot: Snapshot,
    data: TrainingData,
    trained: Trained,
    evaluated: Evaluated,
    registered: Registered,
) -> None:
    """Export ONNX and TFLite, build and upload the Bento (with the exports that passed
    their parity check); only then move `champion` to the new version."""
    from kubetrain_trainer.bento import default_serving_dir, package_and_export

    s, model_name, version = ctx.settings, data.model_name, registered.version
    serving_dir = Path(s.serving_dir) if s.serving_dir else default_serving_dir()
    exports = export_formats(ctx, tracking, data, trained, evaluated)
    with ctx.watch.time("bento"):
        export = package_and_export(
            trained.net,
            client=snapshot.client,
            bucket=snapshot.manifest.bucket,
            prefix=s.bento_prefix,
            model_name=model_name,
            version=version,
            metadata={
                "model_name": model_name,
                "model_version": version,
                "mlflow_run_id": registered.run_id,
                "dataset_digest": snapshot.dataset.digest,
                "classes": data.classes,
                "input_shape": [28, 28, 1],
                "exports": sorted(exports),
            },
            serving_dir=serving_dir,
            scratch=ctx.scratch,
            extra_files=exports,
        )
    ctx.result.bentoUri = export.uri
    tracking.api.set_tag("kubetrain.bento_uri", export.uri)
    ctx.phase("bento exported", uri=export.uri, bento=export.bento_tag, bytes=export.size_bytes)
    trk.set_alias(tracking.client, model_name, trk.CHAMPION, version)
    ctx.result.promoted = True
    ctx.phase("promoted", version=version)


def export_formats(
    ctx: RunContext, tracking: Tracking, data: TrainingData, trained: Trained, evaluated: Evaluated
) -> dict[str, bytes]:
    """ONNX and TFLite exports, each checked against Keras on the test split and logged to
    MLflow (metrics, artifact, tag). Returns the files that passed, by file name; a failed
    export is a warning, never a failed run (Keras serving does not need it)."""
    from kubetrain_trainer import export as ex

    ml = tracking.api
    x, reference = data.x["test"], evaluated.challenger_probs
    if not len(x):  # no test split: check on training images rather than on nothing
        x = data.x["train"][:512]
        reference = mdl.predict(trained.net, x)
    with ctx.watch.time("exports"):
        results = ex.export_all(trained.net, x, reference)
    kept: dict[str, bytes] = {}
    out_dir = ctx.scratch / "exports"
    out_dir.mkdir(parents=True, exist_ok=True)
    for e in results:
        if e.parity is not None:
            ml.log_metrics(
                {
                    f"export_{e.fmt}_argmax_agreement": e.parity.argmax_agreement,
                    f"export_{e.fmt}_max_abs_diff": e.parity.max_abs_diff,
                }
            )
        ml.set_tag(f"kubetrain.export.{e.fmt}", "ok" if e.kept else f"failed: {e.error}"[:500])
        if e.content is not None and e.parity is not None:  # kept: it passed its check
            path = out_dir / e.filename
            path.write_bytes(e.content)
            ml.log_artifact(str(path), artifact_path="exports")
            kept[e.filename] = e.content
            log(
                "export",
                format=e.fmt,
                bytes=len(e.content),
                images=e.parity.images,
                argmax_agreement=e.parity.argmax_agreement,
                max_abs_diff=e.parity.max_abs_diff,
            )
        else:
            warn("export left out", format=e.fmt, error=e.error)
    return kept


def finish(ctx: RunContext, tracking: Tracking, snapshot: Snapshot, trained: Trained) -> None:
    """Tag the run promoted or not; mark the result succeeded with its extra fields."""
    result, champion = ctx.result, tracking.champion
    tracking.api.set_tag(trk.TAG_PROMOTED, str(result.promoted).lower())
    result.status = "succeeded"
    result.extra = {
        "snapshotDigest": snapshot.manifest.digest,
        "skippedByReason": snapshot.dataset.skipped_counts(),
        "warmStartFrom": trained.warm_from,
        "championVersion": champion.version if champion else "",
        "epochs": trained.fit.epochs_run,
    }


# --- MLflow records ------------------------------------------------------------------------


def log_evaluation(ml: Any, evaluated: Evaluated, classes: list[str]) -> None:
    """Test metrics (per class too), the confusion matrix image and evaluation.json."""
    from kubetrain_trainer.report import confusion_png

    ev, champion_eval = evaluated.challenger, evaluated.champion
    precision, recall = ev.precision(), ev.recall()
    metrics = {"test_accuracy": ev.accuracy, "test_loss": ev.loss}
    for c in classes:
        metrics[f"precision_{c}"] = precision[c]
        metrics[f"recall_{c}"] = recall[c]
    if champion_eval is not None:
        metrics["champion_test_accuracy"] = champion_eval.accuracy
        metrics["champion_test_loss"] = champion_eval.loss
    ml.log_metrics({metric_name(k): v for k, v in metrics.items()})
    png = confusion_png(ev.confusion, classes, f"test accuracy {ev.accuracy:.4f} on {ev.n} images")
    tmp = Path(tempfile.mkdtemp(prefix="kubetrain-cm-"))
    try:
        (tmp / "confusion_matrix.png").write_bytes(png)
        ml.log_artifact(str(tmp / "confusion_matrix.png"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ml.log_text(
        json.dumps(
            {
                "classes": classes,
                "precision": precision,
                "recall": recall,
                "confusion": ev.confusion.tolist(),
                "accuracy": ev.accuracy,
                "loss": ev.loss,
            },
            indent=1,
        ),
        "evaluation.json",
    )
