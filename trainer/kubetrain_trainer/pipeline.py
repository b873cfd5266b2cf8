"""One training run, start to finish: snapshot in, MLflow run and (maybe) Bento out.

    manifest -> load + verify + decode (parallel) -> split by key hash -> champion lookup
    -> train (warm start from the champion, or from scratch) -> evaluate challenger and
    champion on the same test split -> log + register (alias challenger) -> gate
    -> [promoted] Bento build + export, then alias champion -> TrainResult

Ordering choices:
- Threads are sized before TensorFlow runs anything (resources.configure_threads), but
  after the dataset is loaded: bad input is reported without paying for the TF import.
- The Bento is built and uploaded *before* the `champion` alias moves, so `champion`
  never points at a version without a deployable Bento; if the export fails the run
  fails as transient and the old champion stays.
- Everything the run used is recorded before training starts (manifests, skipped
  list, params), so even a run that dies mid-training says what it was given.

Errors: `BadInput` -> exit 2, `Transient` (and anything unexpected) -> exit 75; in
every case a `TrainResult` with status "failed" and the reason is produced.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kubetrain_contract import EXIT_BAD_INPUT, EXIT_OK, EXIT_TRANSIENT, TrainResult
from numpy.typing import NDArray

from kubetrain_trainer import snapshot as snap
from kubetrain_trainer import tracking as trk
from kubetrain_trainer.errors import BadInput, Transient
from kubetrain_trainer.gate import decide
from kubetrain_trainer.logs import error, library_output_as_logs, log, register_secret, warn
from kubetrain_trainer.resources import configure_threads, plan_threads
from kubetrain_trainer.settings import TrainerSettings
from kubetrain_trainer.split import SPLITS, split_of

SKIPPED_LIST_LIMIT = 10000
"""At most this many skipped entries go into skipped.json (the count is always exact)."""


@dataclass
class RunReport:
    """The result plus what benchmarks and tests want to see beyond the contract."""

    result: TrainResult
    exit_code: int
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)


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


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def time(self, name: str) -> _Lap:
        return _Lap(self, name)


class _Lap:
    def __init__(self, watch: _Stopwatch, name: str) -> None:
        self.watch, self.name, self.start = watch, name, 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.watch.timings[self.name] = round(time.perf_counter() - self.start, 3)


def run(settings: TrainerSettings, *, on_phase: Callable[[str], None] | None = None) -> RunReport:
    """Execute one run; never raises for expected failures (see the exit code)."""
    register_secret(settings.minio_secret_key)
    result = TrainResult(status="failed", modelName=settings.model_name)
    watch = _Stopwatch()
    figures: dict[str, float] = {}
    scratch_created = not settings.work_dir
    scratch = Path(settings.work_dir or tempfile.mkdtemp(prefix="kubetrain-train-"))
    os.environ["BENTOML_HOME"] = str(scratch / "bentoml")
    t0 = time.perf_counter()
    try:
        with library_output_as_logs():
            _run(settings, result, watch, figures, scratch, on_phase)
        code = EXIT_OK
    except BadInput as exc:
        result.status, result.reason = "failed", f"bad input: {exc}"
        code = EXIT_BAD_INPUT
    except Transient as exc:
        result.status, result.reason = "failed", f"transient: {exc}"
        code = EXIT_TRANSIENT
    except Exception as exc:
        code = EXIT_TRANSIENT
        if _looks_transient(exc):
            result.status, result.reason = "failed", f"transient: {type(exc).__name__}: {exc}"
        else:
            result.status = "failed"
            result.reason = f"internal error: {type(exc).__name__}: {exc}"
            error("run failed unexpectedly", with_traceback=True, error=result.reason)
    finally:
        watch.timings["total"] = round(time.perf_counter() - t0, 3)
        if scratch_created:
            shutil.rmtree(scratch, ignore_errors=True)
    if code != EXIT_OK:
        warn("run failed", reason=result.reason, exit_code=code)
    return RunReport(result=result, exit_code=code, timings=watch.timings, figures=figures)


def _looks_transient(exc: BaseException) -> bool:
    """Network and server-side failures of MLflow/requests/urllib3 that escaped wrapping."""
    import requests
    import urllib3

    if isinstance(exc, requests.exceptions.RequestException | urllib3.exceptions.HTTPError):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is a trainer dependency
        return False
    if isinstance(exc, MlflowException):
        code = getattr(exc, "error_code", "")
        return code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "")
    return False


def _run(
    s: TrainerSettings,
    result: TrainResult,
    watch: _Stopwatch,
    figures: dict[str, float],
    scratch: Path,
    on_phase: Callable[[str], None] | None,
) -> None:
    def phase(name: str, **fields: Any) -> None:
        log(name, phase=name, **fields)
        if on_phase:
            on_phase(name)

    # --- load exactly the snapshot -------------------------------------------------
    bucket, manifest_key = s.manifest_location()
    client = snap.make_client(
        s.minio_endpoint, s.minio_access_key, s.minio_secret_key, pool_size=s.download_workers
    )
    with watch.time("load"):
        manifest = snap.read_manifest(client, bucket, manifest_key)
        result.datasetDigest = manifest.digest
        phase(
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
    figures["load_images_per_second"] = round(dataset.images_per_second, 1)
    phase(
        "loaded",
        images=len(dataset.keys),
        skipped=dataset.skipped_counts(),
        megabytes=round(dataset.bytes_read / 1e6, 2),
        seconds=round(dataset.seconds, 2),
        images_per_second=figures["load_images_per_second"],
        dataset_digest=dataset.digest,
    )
    for item in dataset.skipped[:20]:
        warn("skipped object", key=item.key, reason=item.reason, detail=item.detail)
    if len(dataset.keys) < s.min_images:
        raise BadInput(
            f"only {len(dataset.keys)} usable images in {s.manifest} (minimum {s.min_images}); "
            f"skipped: {dataset.skipped_counts()}"
        )
    classes = sort_labels(set(dataset.labels))
    if len(classes) < 2:
        raise BadInput(f"need at least 2 labels to train a classifier, found {classes}")
    if dataset.digest != manifest.digest:
        stored = snap.store_dataset_manifest(client, manifest_key, dataset)
        phase("dataset manifest stored", key=stored, digest=dataset.digest)

    model_name = s.model_name or (
        "kubetrain-" + manifest.watch.replace("/", "-") if manifest.watch else ""
    )
    if not model_name:
        raise BadInput("no model name: set KUBETRAIN_MODEL_NAME or KUBETRAIN_WATCH")
    result.modelName = model_name
    experiment = s.experiment or model_name

    # --- split by key hash ---------------------------------------------------------
    index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([index[lab] for lab in dataset.labels], dtype=np.int64)
    which = np.array([split_of(k) for k in dataset.keys])
    parts = {name: which == name for name in SPLITS}
    x = {name: dataset.images[mask] for name, mask in parts.items()}
    y = {name: y_all[mask] for name, mask in parts.items()}
    sizes: dict[str, int] = {name: int(mask.sum()) for name, mask in parts.items()}
    phase("split", **sizes, classes=classes)
    if sizes["train"] == 0 or sizes["test"] == 0:
        raise BadInput(f"dataset too small to split: {sizes}")

    # --- threads before any TensorFlow op: TF fixes its pools at its first op --------
    plan = plan_threads(s.cpu_limit)
    with watch.time("tensorflow_init"):  # importing TensorFlow alone takes seconds
        configure_threads(plan)
    phase(
        "threads",
        cpu_limit=plan.cpu_limit,
        source=plan.source,
        intra_op=plan.intra_op,
        inter_op=plan.inter_op,
    )

    # --- MLflow: champion and run ----------------------------------------------------
    import mlflow
    from mlflow import MlflowClient

    with watch.time("mlflow_setup"):
        trk.configure_client_env()
        mlflow.set_tracking_uri(s.mlflow_tracking_uri)
        client_ml = MlflowClient(tracking_uri=s.mlflow_tracking_uri)
        experiment_id = trk.ensure_experiment(experiment)
        champion = trk.find_champion(client_ml, model_name)
    champion_model = None
    if champion is not None:
        phase("champion", version=champion.version, run_id=champion.run_id)
        with watch.time("champion_load"):
            champion_model = trk.load_model_version(model_name, champion.version)
    else:
        phase("champion", version=None)

    run_name = (
        f"{(s.watch or manifest.watch or model_name).replace('/', '-')}-{dataset.digest[7:19]}"
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as active:
        run_id = active.info.run_id
        result.mlflowRunId = run_id
        phase("mlflow run", run_id=run_id, experiment=experiment)
        with watch.time("log_inputs"):
            _log_inputs(s, manifest, dataset, classes, sizes, plan, model_name)

        # --- train -------------------------------------------------------------------
        from kubetrain_trainer import model as mdl

        warm_from = ""
        if s.warm_start and champion_model is not None and champion is not None:
            if champion.classes is not None and champion.classes != classes:
                warn("warm start skipped: classes differ", champion=champion.classes, now=classes)
            else:
                try:
                    net = mdl.clone_for_warm_start(champion_model, len(classes))
                    warm_from = champion.version
                except ValueError as exc:
                    warn("warm start skipped: champion incompatible", error=str(exc))
        if not warm_from:
            net = mdl.build_model(len(classes), seed=s.seed)
        lr = s.learning_rate / 3 if warm_from else s.learning_rate
        mlflow.set_tag(trk.TAG_WARM_START, warm_from)
        mlflow.log_params(
            {
                "warm_start_from": warm_from or "scratch",
                "effective_learning_rate": lr,
                "model_parameters": int(net.count_params()),
            }
        )
        phase("training", warm_start_from=warm_from or None, epochs=s.epochs, learning_rate=lr)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=epoch)
            log("epoch", epoch=epoch + 1, **{k: round(v, 5) for k, v in metrics.items()})

        with watch.time("train"):
            fit = mdl.fit(
                net,
                x["train"],
                y["train"],
                x["val"],
                y["val"],
                epochs=s.epochs,
                batch_size=s.batch_size,
                learning_rate=lr,
                patience=s.patience,
                min_delta=s.min_delta,
                augment=s.augment,
                seed=s.seed,
                on_epoch=on_epoch,
            )
        figures["train_images_per_second"] = round(fit.images_per_second, 1)
        figures["epochs_run"] = fit.epochs_run
        mlflow.log_metrics(
            {
                "epochs_run": fit.epochs_run,
                "best_epoch": fit.best_epoch + 1,
                "train_seconds": fit.seconds,
                "train_images_per_second": fit.images_per_second,
                "load_images_per_second": dataset.images_per_second,
            }
        )

        # --- evaluate challenger and champion on the same test split ---------------------
        with watch.time("evaluate"):
            ev = mdl.evaluate_probs(mdl.predict(net, x["test"]), y["test"], classes)
            champion_eval = None
            if champion_model is not None and champion is not None:
                probs = align_probs(
                    mdl.predict(champion_model, x["test"]), champion.classes, classes
                )
                champion_eval = mdl.evaluate_probs(probs, y["test"], classes)
        result.accuracy = round(ev.accuracy, 6)
        result.championAccuracy = (
            round(champion_eval.accuracy, 6) if champion_eval is not None else None
        )
        figures["test_accuracy"] = ev.accuracy
        phase(
            "evaluated",
            test_accuracy=round(ev.accuracy, 5),
            test_loss=round(ev.loss, 5),
            champion_accuracy=result.championAccuracy,
            test_images=ev.n,
        )
        with watch.time("log_results"):
            _log_evaluation(ev, champion_eval, classes)
            version = trk.log_keras_model(net, model_name, x["test"][:5][..., np.newaxis])
        result.modelVersion = version
        trk.set_alias(client_ml, model_name, trk.CHALLENGER, version)
        decision = decide(
            ev.accuracy,
            champion_eval.accuracy if champion_eval is not None else None,
            min_accuracy=s.min_accuracy,
            tolerance=s.tolerance,
        )
        result.reason = decision.reason
        trk.tag_version(
            client_ml,
            model_name,
            version,
            {
                trk.TAG_CLASSES: json.dumps(classes),
                trk.TAG_DATASET_DIGEST: dataset.digest,
                "test_accuracy": f"{ev.accuracy:.6f}",
                trk.TAG_GATE: decision.reason,
            },
        )
        mlflow.set_tag(trk.TAG_GATE, decision.reason)
        phase("gate", version=version, promote=decision.promote, reason=decision.reason)

        # --- package, then promote --------------------------------------------------------
        if decision.promote:
            from kubetrain_trainer.bento import default_serving_dir, package_and_export

            serving_dir = Path(s.serving_dir) if s.serving_dir else default_serving_dir()
            with watch.time("bento"):
                export = package_and_export(
                    net,
                    client=client,
                    bucket=manifest.bucket,
                    prefix=s.bento_prefix,
                    model_name=model_name,
                    version=version,
                    metadata={
                        "model_name": model_name,
                        "model_version": version,
                        "mlflow_run_id": run_id,
                        "dataset_digest": dataset.digest,
                        "classes": classes,
                        "input_shape": [28, 28, 1],
                    },
                    serving_dir=serving_dir,
                    scratch=scratch,
                )
            result.bentoUri = export.uri
            mlflow.set_tag("kubetrain.bento_uri", export.uri)
            phase("bento exported", uri=export.uri, bento=export.bento_tag, bytes=export.size_bytes)
            trk.set_alias(client_ml, model_name, trk.CHAMPION, version)
            result.promoted = True
            phase("promoted", version=version)
        mlflow.set_tag(trk.TAG_PROMOTED, str(result.promoted).lower())
        result.status = "succeeded"
        result.extra = {
            "snapshotDigest": manifest.digest,
            "skippedByReason": dataset.skipped_counts(),
            "warmStartFrom": warm_from,
            "championVersion": champion.version if champion else "",
            "epochs": fit.epochs_run,
        }
    log("done", **{k: v for k, v in json.loads(result.to_message()).items()})


def _log_inputs(
    s: TrainerSettings,
    manifest: Any,
    dataset: snap.LoadedDataset,
    classes: list[str],
    sizes: dict[str, int],
    plan: Any,
    model_name: str,
) -> None:
    import mlflow

    params: dict[str, Any] = {
        k: v
        for k, v in s.public_params().items()
        if k not in ("minio_access_key", "termination_log", "work_dir")
    }
    params.update(
        {
            "model_name": model_name,
            "classes": ",".join(classes),
            "n_train": sizes["train"],
            "n_val": sizes["val"],
            "n_test": sizes["test"],
            "n_images": len(dataset.keys),
            "n_skipped": len(dataset.skipped),
            "intra_op_threads": plan.intra_op,
            "inter_op_threads": plan.inter_op,
            "dataset_digest": dataset.digest,
        }
    )
    mlflow.log_params(params)
    mlflow.set_tags(
        {
            trk.TAG_WATCH: s.watch or manifest.watch,
            trk.TAG_TRIGGER: s.trigger_reason[:5000],
            trk.TAG_DATASET_DIGEST: dataset.digest,
            trk.TAG_SNAPSHOT_DIGEST: manifest.digest,
            trk.TAG_MANIFEST_URI: s.manifest,
            trk.TAG_CLASSES: json.dumps(classes),
            trk.TAG_SKIPPED: str(len(dataset.skipped)),
        }
    )
    mlflow.log_text(manifest.to_json(), "manifest/snapshot.json")
    mlflow.log_text(dataset.dataset_manifest().to_json(), "manifest/dataset.json")
    mlflow.log_text(
        json.dumps({"snapshot": manifest.digest, "dataset": dataset.digest}, indent=1),
        "manifest/digest.json",
    )
    mlflow.log_text(
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
    mlflow.log_text(s.trigger_reason, "trigger_reason.txt")
    mlflow.log_metric("skipped_files", len(dataset.skipped))


def _log_evaluation(ev: Any, champion_eval: Any, classes: list[str]) -> None:
    import mlflow

    from kubetrain_trainer.report import confusion_png

    precision, recall = ev.precision(), ev.recall()
    metrics = {"test_accuracy": ev.accuracy, "test_loss": ev.loss}
    for c in classes:
        metrics[f"precision_{c}"] = precision[c]
        metrics[f"recall_{c}"] = recall[c]
    if champion_eval is not None:
        metrics["champion_test_accuracy"] = champion_eval.accuracy
        metrics["champion_test_loss"] = champion_eval.loss
    mlflow.log_metrics({_metric_name(k): v for k, v in metrics.items()})
    png = confusion_png(ev.confusion, classes, f"test accuracy {ev.accuracy:.4f} on {ev.n} images")
    tmp = Path(tempfile.mkdtemp(prefix="kubetrain-cm-"))
    try:
        (tmp / "confusion_matrix.png").write_bytes(png)
        mlflow.log_artifact(str(tmp / "confusion_matrix.png"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mlflow.log_text(
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


def _metric_name(name: str) -> str:
    """MLflow metric names allow alphanumerics, _ - . / and space."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in name)
