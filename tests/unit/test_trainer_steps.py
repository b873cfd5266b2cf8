"""The training run as steps: their order, what each hands on, which failure ends how.

No TensorFlow, Keras, BentoML, MinIO or MLflow server: either the steps themselves are
replaced by recorders (sequencing), or the real steps run against small fakes of their
collaborators (the `mlflow` module, the registry client, the snapshot reader, the model
functions, the Bento export), with `tensorflow`, `keras` and `bentoml` made unimportable.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import requests
import urllib3
from kubetrain_contract import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_TRANSIENT,
    SnapshotManifest,
    TrainResult,
)
from kubetrain_trainer import bento, pipeline, report
from kubetrain_trainer import export as ex
from kubetrain_trainer import model as mdl
from kubetrain_trainer import snapshot as snap
from kubetrain_trainer import steps as st
from kubetrain_trainer import tracking as trk
from kubetrain_trainer.cli import Terminated
from kubetrain_trainer.errors import BadInput, Transient
from kubetrain_trainer.gate import GateDecision
from kubetrain_trainer.settings import TrainerSettings
from kubetrain_trainer.split import split_of
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

MANIFEST_KEY = ".kubetrain/snapshots/ns-w/abc.json"


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` sets BENTOML_HOME; let monkeypatch put it back."""
    monkeypatch.setenv("BENTOML_HOME", "unset-by-test")


def make_settings(tmp_path: Path, **over: Any) -> TrainerSettings:
    values: dict[str, Any] = {
        "manifest": f"s3://data/{MANIFEST_KEY}",
        "minio_access_key": "steps-access",
        "minio_secret_key": "steps-test-secret",
        "mlflow_tracking_uri": "http://127.0.0.1:1",
        "watch": "ns/w",
        "model_name": "kubetrain-ns-w",
        "min_images": 4,
        "work_dir": str(tmp_path / "work"),
        "cpu_limit": "1",
    }
    values.update(over)
    return TrainerSettings(**values)


def keys_in(split: str, label: str, n: int) -> list[str]:
    """n object keys of `label` that hash into `split`."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        key = f"digits/{label}/{i:04d}.png"
        if split_of(key) == split:
            out.append(key)
        i += 1
    return out


def make_dataset(
    keys: list[str], *, skipped: tuple[snap.Skipped, ...] = (), watch: str = "ns/w"
) -> snap.LoadedDataset:
    """Images whose pixel value encodes their label, so a fake model can classify them."""
    keys = sorted(keys)
    labels = [k.split("/")[1] for k in keys]
    images = np.stack([np.full((28, 28), int(lab) / 10, dtype=np.float32) for lab in labels])
    verified = {k: f"etag-{k}" for k in keys}
    objects = {**verified, **{s.key: "etag-old" for s in skipped}}
    manifest = SnapshotManifest(watch=watch, bucket="data", prefix="digits/", objects=objects)
    return snap.LoadedDataset(
        snapshot=manifest,
        keys=keys,
        labels=labels,
        images=images,
        verified=verified,
        skipped=list(skipped),
        bytes_read=1000,
        seconds=0.5,
    )


def small_dataset(**kw: Any) -> snap.LoadedDataset:
    """Two labels, every split non-empty: 2x(3 train + 1 val + 2 test)."""
    keys = [
        k
        for label in ("0", "1")
        for k in keys_in("train", label, 3) + keys_in("val", label, 1) + keys_in("test", label, 2)
    ]
    return make_dataset(keys, **kw)


class FakeNet:
    """Predicts from the pixel value (`right`) or always class 0."""

    def __init__(self, name: str, *, right: bool = True, outputs: int = 2) -> None:
        self.name, self.right, self.outputs = name, right, outputs

    def probs(self, x: np.ndarray) -> np.ndarray:
        label = np.rint(x[:, 0, 0] * 10).astype(int) if self.right else np.zeros(len(x), int)
        out = np.zeros((len(x), self.outputs), dtype=np.float32)
        out[np.arange(len(x)), label] = 1.0
        return out

    def count_params(self) -> int:
        return 42


@dataclass
class FakeMlflow:
    """The `mlflow` module as the steps use it; records calls, tags, texts."""

    events: list[str]
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    run_error: BaseException | None = None
    registry: Any = None

    def set_tracking_uri(self, uri: str) -> None:
        self.events.append(f"tracking uri {uri}")

    def MlflowClient(self, *, tracking_uri: str) -> Any:  # mlflow.MlflowClient(...)
        return self.registry

    @contextmanager
    def start_run(self, *, experiment_id: str, run_name: str) -> Iterator[Any]:
        self.events.append(f"start run {experiment_id} {run_name}")
        try:
            yield SimpleNamespace(info=SimpleNamespace(run_id="run-1"))
        except BaseException as exc:
            self.run_error = exc
            raise
        finally:
            self.events.append("end run")

    def set_tag(self, key: str, value: str) -> None:
        self.tags[key] = value

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.update(metrics)

    def log_metric(self, key: str, value: float) -> None:
        self.metrics[key] = value

    def log_text(self, text: str, path: str) -> None:
        self.texts[path] = text

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        assert Path(path).is_file()
        self.artifacts.append(
            f"{artifact_path}/{Path(path).name}" if artifact_path else Path(path).name
        )


@dataclass
class FakeRegistry:
    """The `MlflowClient` calls of the registry protocol."""

    events: list[str]
    aliases: dict[str, str] = field(default_factory=dict)
    version_tags: dict[str, dict[str, str]] = field(default_factory=dict)

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.events.append(f"alias {alias}={version}")
        self.aliases[alias] = version

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.version_tags.setdefault(version, {})[key] = value


@dataclass
class World:
    """Everything around the real steps, faked; `events` is one timeline across fakes."""

    settings: TrainerSettings
    dataset: snap.LoadedDataset
    events: list[str]
    mlflow: FakeMlflow
    registry: FakeRegistry
    stored: list[str] = field(default_factory=list)
    exports: list[dict[str, Any]] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)

    def run(self) -> pipeline.RunReport:
        return pipeline.run(self.settings, on_phase=self.phases.append)


def fake_world(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    dataset: snap.LoadedDataset | None = None,
    champion: trk.Champion | None = None,
    champion_net: FakeNet | None = None,
    challenger: FakeNet | None = None,
    **settings: Any,
) -> World:
    events: list[str] = []
    registry = FakeRegistry(events)
    ml = FakeMlflow(events, registry=registry)
    world = World(
        make_settings(tmp_path, **settings), dataset or small_dataset(), events, ml, registry
    )
    for name in ("tensorflow", "keras", "bentoml"):
        monkeypatch.setitem(sys.modules, name, None)  # importing any of them now fails
    monkeypatch.setitem(sys.modules, "mlflow", ml)
    client = SimpleNamespace(name="minio")

    def read_manifest(c: Any, bucket: str, key: str) -> SnapshotManifest:
        assert (c, bucket, key) == (client, "data", MANIFEST_KEY)
        return world.dataset.snapshot

    def load_snapshot(c: Any, manifest: SnapshotManifest, **kw: Any) -> snap.LoadedDataset:
        assert c is client and manifest is world.dataset.snapshot
        return world.dataset

    def store(c: Any, key: str, ds: snap.LoadedDataset) -> str:
        world.stored.append(key)
        return key + ".dataset"

    monkeypatch.setattr(snap, "make_client", lambda *a, **kw: client)
    monkeypatch.setattr(snap, "read_manifest", read_manifest)
    monkeypatch.setattr(snap, "load_snapshot", load_snapshot)
    monkeypatch.setattr(snap, "store_dataset_manifest", store)
    monkeypatch.setattr(st, "configure_threads", lambda plan: events.append("threads"))
    monkeypatch.setattr(trk, "configure_client_env", lambda: None)
    monkeypatch.setattr(trk, "ensure_experiment", lambda name: "7")
    monkeypatch.setattr(trk, "find_champion", lambda c, name: champion)

    def load_model_version(name: str, version: str) -> Any:
        assert champion is not None and version == champion.version
        return champion_net

    monkeypatch.setattr(trk, "load_model_version", load_model_version)
    net = challenger or FakeNet("scratch")
    monkeypatch.setattr(mdl, "build_model", lambda n, seed: net)
    monkeypatch.setattr(mdl, "clone_for_warm_start", lambda m, n: net)

    def fit(model: Any, x: Any, y: Any, xv: Any, yv: Any, **kw: Any) -> mdl.FitReport:
        stop = "early-stop" if kw["early_stopping"] else "full schedule"
        events.append(f"fit lr={kw['learning_rate']:.6g} {stop}")
        kw["on_epoch"](0, {"loss": 0.5})
        return mdl.FitReport(epochs_run=2, best_epoch=1, seconds=1.0, train_images=len(x))

    monkeypatch.setattr(mdl, "fit", fit)
    monkeypatch.setattr(mdl, "predict", lambda model, x: model.probs(x))

    def log_keras_model(model: Any, name: str, example: Any) -> str:
        assert model is net and example.shape[1:] == (28, 28, 1)
        events.append("model version 3")
        return "3"

    monkeypatch.setattr(trk, "log_keras_model", log_keras_model)
    monkeypatch.setattr(report, "confusion_png", lambda *a: b"\x89PNG")

    def export(model: Any, **kw: Any) -> bento.BentoExport:
        events.append("bento exported")
        world.exports.append(kw)
        uri = f"s3://{kw['bucket']}/bentos/{kw['model_name']}-{kw['version']}.bento"
        return bento.BentoExport("b:v3", "m:v3", uri, size_bytes=10, seconds=0.1)

    monkeypatch.setattr(bento, "package_and_export", export)

    def export_all(model: Any, x: Any, reference: Any) -> list[ex.Export]:
        # One format passes its parity check, the other fails to convert.
        assert model is net and len(x) == len(reference)
        events.append("exports")
        kept = ex.Export("onnx", "model.onnx", b"onnx-bytes", ex.Parity(len(x), 1.0, 1e-7))
        return [kept, ex.Export("tflite", "model.tflite", None, None, "RuntimeError: no op")]

    monkeypatch.setattr(ex, "export_all", export_all)
    return world


# --- sequencing: the steps replaced by recorders ------------------------------------------

STEP_ORDER = [
    "load_snapshot",
    "prepare_data",
    "configure_tensorflow",
    "setup_tracking",
    "mlflow_run",
    "log_inputs",
    "train",
    "evaluate",
    "register",
    "gate",
    "package_and_promote",
    "finish",
]
IN_MLFLOW_RUN = STEP_ORDER[STEP_ORDER.index("log_inputs") :]


@dataclass
class Recorder:
    """Stands in for every step: records (name, inputs), returns a sentinel per output."""

    promote: bool = True
    fail: str = ""
    error: Exception | None = None
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)
    run_error: BaseException | None = None
    out: dict[str, Any] = field(default_factory=dict)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        client = object()
        monkeypatch.setattr(snap, "make_client", lambda *a, **kw: client)
        self.out = {"client": client}
        for name in STEP_ORDER:
            monkeypatch.setattr(st, name, self._step(name))
        monkeypatch.setattr(st, "mlflow_run", self._mlflow_run)

    def _enter(self, name: str, ctx: Any, args: tuple[Any, ...]) -> None:
        self.calls.append((name, args))
        self.contexts.append(ctx)
        if name == self.fail:
            assert self.error is not None
            raise self.error

    def _step(self, name: str) -> Any:
        def step(ctx: st.RunContext, *args: Any) -> Any:
            self._enter(name, ctx, args)
            if name == "gate":
                return GateDecision(self.promote, "promoted: test" if self.promote else "no")
            if name == "finish":
                ctx.result.status = "succeeded"
            self.out[name] = object()
            return self.out[name]

        return step

    @contextmanager
    def _mlflow_run(self, ctx: st.RunContext, *args: Any) -> Iterator[str]:
        self._enter("mlflow_run", ctx, args)
        try:
            yield "run-1"
        except BaseException as exc:
            self.run_error = exc
            raise
        finally:
            self.calls.append(("end mlflow_run", ()))


@pytest.mark.parametrize("promote", [True, False])
def test_steps_run_in_order_and_hand_on_their_outputs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, promote: bool
) -> None:
    rec = Recorder(promote=promote)
    rec.install(monkeypatch)
    result = pipeline.run(make_settings(tmp_path))
    o = rec.out
    snapshot, data, plan = o["load_snapshot"], o["prepare_data"], o["configure_tensorflow"]
    tracking, trained = o["setup_tracking"], o["train"]
    evaluated, registered = o["evaluate"], o["register"]
    expected = [
        ("load_snapshot", (o["client"], "data", MANIFEST_KEY)),
        ("prepare_data", (snapshot,)),
        ("configure_tensorflow", ()),
        ("setup_tracking", (data,)),
        ("mlflow_run", (tracking, snapshot, data)),
        ("log_inputs", (tracking, snapshot, data, plan)),
        ("train", (tracking, snapshot, data)),
        ("evaluate", (tracking, data, trained)),
        ("register", (tracking, data, trained, evaluated, "run-1")),
        ("gate", (tracking, snapshot, data, evaluated, registered)),
        ("package_and_promote", (tracking, snapshot, data, trained, evaluated, registered)),
        ("finish", (tracking, snapshot, trained)),
        ("end mlflow_run", ()),
    ]
    if not promote:
        expected = [call for call in expected if call[0] != "package_and_promote"]
    assert rec.calls == expected
    assert rec.run_error is None
    assert result.exit_code == EXIT_OK and result.result.status == "succeeded"
    ctx = rec.contexts[0]
    assert all(c is ctx for c in rec.contexts) and ctx.result is result.result
    assert result.timings is ctx.watch.timings and list(result.timings) == ["total"]


@pytest.mark.parametrize("failing", STEP_ORDER)
def test_a_failing_step_is_the_last_one_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failing: str
) -> None:
    rec = Recorder(fail=failing, error=Transient(f"{failing} broke"))
    rec.install(monkeypatch)
    report_ = pipeline.run(make_settings(tmp_path))
    names = [name for name, _ in rec.calls]
    upto = STEP_ORDER[: STEP_ORDER.index(failing) + 1]
    if failing in IN_MLFLOW_RUN:
        assert names == [*upto, "end mlflow_run"]
        assert rec.run_error is rec.error  # the MLflow run ends as failed
    else:
        assert names == upto and rec.run_error is None
    assert report_.exit_code == EXIT_TRANSIENT
    assert report_.result.status == "failed"
    assert report_.result.reason == f"transient: {failing} broke"
    assert "total" in report_.timings


# --- error mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code", "reason", "unexpected"),
    [
        (BadInput("only 3 images"), EXIT_BAD_INPUT, "bad input: only 3 images", False),
        (Transient("MLflow: down"), EXIT_TRANSIENT, "transient: MLflow: down", False),
        (Terminated("terminated by signal 15"), 75, "transient: terminated by signal 15", False),
        (
            requests.exceptions.ConnectionError("reset"),
            EXIT_TRANSIENT,
            "transient: ConnectionError: reset",
            False,
        ),
        (
            urllib3.exceptions.ProtocolError("eof"),
            EXIT_TRANSIENT,
            "transient: ProtocolError: eof",
            False,
        ),
        (
            ConnectionRefusedError("no"),
            EXIT_TRANSIENT,
            "transient: ConnectionRefusedError: no",
            False,
        ),
        (TimeoutError("slow"), EXIT_TRANSIENT, "transient: TimeoutError: slow", False),
        (
            MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE),
            EXIT_TRANSIENT,
            "transient: MlflowException: busy",
            False,
        ),
        (MlflowException("5xx"), EXIT_TRANSIENT, "transient: MlflowException: 5xx", False),
        (
            MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST),
            EXIT_TRANSIENT,
            "internal error: MlflowException: gone",
            True,
        ),
        (KeyError("n_val"), EXIT_TRANSIENT, "internal error: KeyError: 'n_val'", True),
        (ValueError("bad shape"), EXIT_TRANSIENT, "internal error: ValueError: bad shape", True),
    ],
)
def test_classify_failure(exc: Exception, code: int, reason: str, unexpected: bool) -> None:
    assert pipeline.classify_failure(exc) == pipeline.Failure(code, reason, unexpected)


@pytest.mark.parametrize(
    ("exc", "code", "prefix", "unexpected"),
    [
        (BadInput("champion has no classes"), EXIT_BAD_INPUT, "bad input: ", False),
        (Transient("MinIO: 503"), EXIT_TRANSIENT, "transient: ", False),
        (requests.exceptions.ReadTimeout("slow"), EXIT_TRANSIENT, "transient: ReadTimeout", False),
        (ZeroDivisionError("division by zero"), EXIT_TRANSIENT, "internal error: ", True),
    ],
)
def test_failure_in_a_real_step_keeps_what_was_known(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    exc: Exception,
    code: int,
    prefix: str,
    unexpected: bool,
) -> None:
    world = fake_world(monkeypatch, tmp_path)

    def fit(*a: Any, **kw: Any) -> mdl.FitReport:
        raise exc

    monkeypatch.setattr(mdl, "fit", fit)
    caplog.set_level(logging.INFO, logger="kubetrain.trainer")
    rep = world.run()
    r = rep.result
    assert rep.exit_code == code and r.status == "failed" and r.reason.startswith(prefix)
    assert r.reason.endswith(str(exc))
    # Fields filled in before the failure stay; later ones are never set.
    assert r.datasetDigest == world.dataset.digest and r.mlflowRunId == "run-1"
    assert r.modelName == "kubetrain-ns-w" and r.accuracy is None and r.modelVersion == ""
    assert world.mlflow.run_error is exc and world.events[-1] == "end run"
    assert world.phases[-1] == "training" and world.registry.aliases == {}
    failed = [x for x in caplog.records if x.getMessage() == "run failed"]
    assert len(failed) == 1 and failed[0].fields == {"reason": r.reason, "exit_code": code}
    crashed = [x for x in caplog.records if x.getMessage() == "run failed unexpectedly"]
    assert len(crashed) == (1 if unexpected else 0)
    if unexpected:
        assert crashed[0].exc_info is not None and crashed[0].exc_info[1] is exc


def test_a_scratch_directory_of_its_own_is_removed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[Path] = []

    def load(ctx: st.RunContext, *a: Any) -> Any:
        seen.append(ctx.scratch)
        assert ctx.scratch.is_dir()
        raise BadInput("empty bucket")

    monkeypatch.setattr(snap, "make_client", lambda *a, **kw: object())
    monkeypatch.setattr(st, "load_snapshot", load)
    rep = pipeline.run(make_settings(tmp_path, work_dir=""))
    assert rep.exit_code == EXIT_BAD_INPUT and rep.result.reason == "bad input: empty bucket"
    assert seen and not seen[0].exists()
    assert rep.result.modelName == "kubetrain-ns-w"


# --- the real steps against fakes -------------------------------------------------------------


def test_first_model_is_promoted_after_its_bento_is_exported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = fake_world(monkeypatch, tmp_path)
    rep = world.run()
    r, ml = rep.result, world.mlflow
    assert rep.exit_code == EXIT_OK, r.reason
    assert r.status == "succeeded" and r.promoted and r.modelVersion == "3"
    assert r.reason.startswith("promoted: first model") and r.accuracy == 1.0
    assert r.championAccuracy is None and r.mlflowRunId == "run-1" and r.skipped == 0
    assert r.bentoUri == "s3://data/bentos/kubetrain-ns-w-3.bento"
    assert r.datasetDigest == world.dataset.digest
    assert r.extra == {
        "snapshotDigest": world.dataset.snapshot.digest,
        "skippedByReason": {},
        "warmStartFrom": "",
        "championVersion": "",
        "epochs": 2,
    }
    # Threads before tracking; challenger alias, then the Bento, then the champion alias.
    assert world.events == [
        "threads",
        "tracking uri http://127.0.0.1:1",
        f"start run 7 ns-w-{world.dataset.digest[7:19]}",
        "fit lr=0.001 full schedule",
        "model version 3",
        "alias challenger=3",
        "exports",
        "bento exported",
        "alias champion=3",
        "end run",
    ]
    assert world.phases == [
        "snapshot",
        "loaded",
        "split",
        "threads",
        "champion",
        "mlflow run",
        "training",
        "evaluated",
        "gate",
        "bento exported",
        "promoted",
    ]
    assert ml.tags[trk.TAG_PROMOTED] == "true" and ml.tags[trk.TAG_WARM_START] == ""
    assert ml.tags["kubetrain.bento_uri"] == r.bentoUri
    assert ml.tags[trk.TAG_GATE] == r.reason == world.registry.version_tags["3"][trk.TAG_GATE]
    assert world.registry.version_tags["3"][trk.TAG_CLASSES] == '["0", "1"]'
    assert ml.params["warm_start_from"] == "scratch" and ml.params["n_test"] == 4
    assert ml.params["n_train"] == 6 and ml.params["n_val"] == 2
    assert ml.params["intra_op_threads"] == 1 and "minio_secret_key" not in ml.params
    assert ml.metrics["loss"] == 0.5 and ml.metrics["test_accuracy"] == 1.0
    assert ml.metrics["epochs_run"] == 2 and ml.metrics["best_epoch"] == 2
    assert set(ml.texts) == {
        "manifest/snapshot.json",
        "manifest/dataset.json",
        "manifest/digest.json",
        "skipped.json",
        "trigger_reason.txt",
        "evaluation.json",
    }
    # The export that passed is logged and packed; the one that failed is only reported.
    assert ml.artifacts == ["confusion_matrix.png", "exports/model.onnx"]
    assert ml.metrics["export_onnx_argmax_agreement"] == 1.0
    assert ml.tags["kubetrain.export.onnx"] == "ok"
    assert ml.tags["kubetrain.export.tflite"] == "failed: RuntimeError: no op"
    (export,) = world.exports
    assert export["extra_files"] == {"model.onnx": b"onnx-bytes"}
    assert export["metadata"]["exports"] == ["model.onnx"]
    assert export["metadata"]["classes"] == ["0", "1"] and export["version"] == "3"
    assert export["metadata"]["mlflow_run_id"] == "run-1" and export["bucket"] == "data"
    assert list(rep.timings) == [
        "load",
        "tensorflow_init",
        "mlflow_setup",
        "log_inputs",
        "train",
        "evaluate",
        "log_results",
        "exports",
        "bento",
        "total",
    ]
    assert rep.figures["test_accuracy"] == 1.0 and rep.figures["epochs_run"] == 2
    assert world.stored == []  # the dataset is the snapshot: nothing to store


def test_a_worse_challenger_leaves_the_champion(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    champion = trk.Champion(version="2", run_id="r0", classes=["0", "1"], source="")
    world = fake_world(
        monkeypatch,
        tmp_path,
        champion=champion,
        champion_net=FakeNet("champion"),
        challenger=FakeNet("bad", right=False),
        min_accuracy=0.0,
    )
    rep = world.run()
    r = rep.result
    assert rep.exit_code == EXIT_OK and r.status == "succeeded"
    assert not r.promoted and r.bentoUri == "" and world.exports == []
    assert r.accuracy == 0.5 and r.championAccuracy == 1.0
    assert r.reason.startswith("refused: accuracy 0.5000 is worse than the champion's 1.0000")
    assert world.registry.aliases == {"challenger": "3"}
    assert world.mlflow.tags[trk.TAG_PROMOTED] == "false"
    assert world.mlflow.tags[trk.TAG_WARM_START] == "2"
    # A warm start fine-tunes at a third of the learning rate and stops when converged.
    assert "fit lr=0.000333333 early-stop" in world.events
    assert r.extra["warmStartFrom"] == "2" and r.extra["championVersion"] == "2"
    assert world.mlflow.metrics["champion_test_accuracy"] == 1.0
    assert "champion_load" in rep.timings and "bento" not in rep.timings


def test_bento_failure_leaves_the_champion_alias(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = fake_world(monkeypatch, tmp_path)

    def export(*a: Any, **kw: Any) -> bento.BentoExport:
        raise Transient("uploading the Bento to s3://data/x: SlowDown")

    monkeypatch.setattr(bento, "package_and_export", export)
    rep = world.run()
    r = rep.result
    assert rep.exit_code == EXIT_TRANSIENT and r.status == "failed"
    assert r.reason == "transient: uploading the Bento to s3://data/x: SlowDown"
    assert world.registry.aliases == {"challenger": "3"} and not r.promoted
    assert r.modelVersion == "3" and r.bentoUri == "" and r.accuracy == 1.0
    assert trk.TAG_PROMOTED not in world.mlflow.tags
    assert isinstance(world.mlflow.run_error, Transient)


def test_a_changed_object_is_skipped_and_the_dataset_manifest_stored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gone = snap.Skipped("digits/1/9999.png", "vanished", "NoSuchKey")
    world = fake_world(monkeypatch, tmp_path, dataset=small_dataset(skipped=(gone,)))
    rep = world.run()
    r = rep.result
    assert rep.exit_code == EXIT_OK and r.skipped == 1
    assert r.datasetDigest == world.dataset.digest != world.dataset.snapshot.digest
    assert world.stored == [MANIFEST_KEY]
    assert "dataset manifest stored" in world.phases
    assert r.extra["skippedByReason"] == {"vanished": 1}
    assert world.mlflow.tags[trk.TAG_SKIPPED] == "1"
    assert world.mlflow.metrics["skipped_files"] == 1


def make_ctx(tmp_path: Path, **settings: Any) -> st.RunContext:
    s = make_settings(tmp_path, **settings)
    return st.RunContext(settings=s, result=TrainResult(status="failed"), scratch=tmp_path)


def snapshot_of(dataset: snap.LoadedDataset) -> st.Snapshot:
    return st.Snapshot(object(), MANIFEST_KEY, dataset.snapshot, dataset)


@pytest.mark.parametrize(
    ("dataset", "settings", "message"),
    [
        (small_dataset(), {"min_images": 13}, "only 12 usable images"),
        (make_dataset(keys_in("train", "0", 5)), {}, "need at least 2 labels"),
        (small_dataset(watch=""), {"model_name": "", "watch": ""}, "no model name"),
        (
            make_dataset(keys_in("train", "0", 3) + keys_in("train", "1", 3)),
            {},
            "dataset too small to split",
        ),
    ],
)
def test_prepare_data_refuses_what_cannot_train(
    tmp_path: Path, dataset: snap.LoadedDataset, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadInput, match=message):
        st.prepare_data(make_ctx(tmp_path, **settings), snapshot_of(dataset))


def test_prepare_data_names_the_model_after_the_watch(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, model_name="", watch="")
    data = st.prepare_data(ctx, snapshot_of(small_dataset(watch="team/digits")))
    assert data.model_name == ctx.result.modelName == "kubetrain-team-digits"
    assert data.experiment == "kubetrain-team-digits" and data.classes == ["0", "1"]
    assert data.sizes == {"train": 6, "val": 2, "test": 4}
    assert data.x["test"].shape == (4, 28, 28) and list(data.y["test"]) == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("warm_start", "champion_classes", "clone_error", "start"),
    [
        (True, ["0", "1"], None, "2"),
        (True, None, None, "2"),
        (True, ["0", "1", "2"], None, ""),
        (True, ["0", "1"], ValueError("3 outputs"), ""),
        (False, ["0", "1"], None, ""),
    ],
)
def test_initial_model_warm_starts_only_from_a_compatible_champion(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    warm_start: bool,
    champion_classes: list[str] | None,
    clone_error: Exception | None,
    start: str,
) -> None:
    def clone(model: Any, n: int) -> Any:
        assert n == 2
        if clone_error is not None:
            raise clone_error
        return "clone"

    monkeypatch.setattr(mdl, "clone_for_warm_start", clone)
    monkeypatch.setattr(mdl, "build_model", lambda n, seed: f"scratch-{n}-{seed}")
    champion = trk.Champion("2", "r0", champion_classes, "")
    tracking = st.Tracking(object(), object(), "7", champion, FakeNet("champion"))
    s = make_settings(tmp_path, warm_start=warm_start, seed=5)
    net, warm_from = st.initial_model(s, tracking, ["0", "1"])
    assert (net, warm_from) == (("clone", "2") if start else ("scratch-2-5", ""))


class ReversedNet(FakeNet):
    """A champion whose output columns are in the other order (classes ["1", "0"])."""

    def probs(self, x: np.ndarray) -> np.ndarray:
        return super().probs(x)[:, ::-1].copy()


def test_evaluate_aligns_the_champions_columns_by_class(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(mdl, "predict", lambda model, x: model.probs(x))
    ctx = make_ctx(tmp_path)
    data = st.prepare_data(ctx, snapshot_of(small_dataset()))
    champion = trk.Champion("2", "r0", ["1", "0"], "")
    tracking = st.Tracking(object(), object(), "7", champion, ReversedNet("champion"))
    trained = st.Trained(FakeNet("new", right=False), "", 1e-3, mdl.FitReport(1, 0, 1.0, 6))
    ev = st.evaluate(ctx, tracking, data, trained)
    assert ev.champion_accuracy == 1.0 and ev.challenger.accuracy == 0.5
    assert ctx.result.championAccuracy == 1.0 and ctx.result.accuracy == 0.5
    assert "evaluate" in ctx.watch.timings


@pytest.mark.parametrize("has_champion", [True, False])
def test_setup_tracking_loads_the_champion_by_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, has_champion: bool
) -> None:
    world = fake_world(
        monkeypatch,
        tmp_path,
        champion=trk.Champion("4", "r4", ["0", "1"], "") if has_champion else None,
        champion_net=FakeNet("champion"),
    )
    ctx = make_ctx(tmp_path)
    ctx.on_phase = world.phases.append
    data = st.prepare_data(ctx, snapshot_of(world.dataset))
    tracking = st.setup_tracking(ctx, data)
    assert tracking.api is world.mlflow and tracking.client is world.registry
    assert tracking.experiment_id == "7"
    assert (tracking.champion is not None) == has_champion
    assert (tracking.champion_model is not None) == has_champion
    assert ("champion_load" in ctx.watch.timings) == has_champion
    assert world.phases[-1] == "champion"
