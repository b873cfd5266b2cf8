"""One training run, start to finish: snapshot in, MLflow run and (maybe) Bento out.

    manifest -> load + verify + decode (parallel) -> split by key hash -> champion lookup
    -> train (warm start from the champion, or from scratch) -> evaluate challenger and
    champion on the same test split -> log + register (alias challenger) -> gate
    -> [promoted] Bento build + export, then alias champion -> TrainResult

Design: `_run` only sequences the steps of kubetrain_trainer.steps (load_snapshot,
prepare_data, configure_tensorflow, setup_tracking, then inside the MLflow run
log_inputs, train, evaluate, register, gate, package_and_promote when promoted,
finish). Each step is a small typed function over a shared `RunContext` (settings,
the result being filled in, timings, figures) and the typed dataclasses the earlier
steps returned (Snapshot, TrainingData, Tracking, Trained, Evaluated, Registered), so
each step, the sequence and the error mapping are unit-tested with fakes, without
TensorFlow or servers. `run` owns what surrounds the steps: the scratch directory,
library output as log lines, and turning an exception into exit code and result.

Ordering choices:
- Threads are sized before TensorFlow runs anything (resources.configure_threads), but
  after the dataset is loaded: bad input is reported without paying for the TF import.
- The Bento is built and uploaded *before* the `champion` alias moves, so `champion`
  never points at a version without a deployable Bento; if the export fails the run
  fails as transient and the old champion stays.
- Everything the run used is recorded before training starts (manifests, skipped
  list, params), so even a run that dies mid-training says what it was given.

Errors (`classify_failure`): `BadInput` -> exit 2, `Transient` (and anything
unexpected) -> exit 75; in every case a `TrainResult` with status "failed" and the
reason is produced, keeping the fields the steps had filled in before the failure.
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

from kubetrain_contract import EXIT_BAD_INPUT, EXIT_OK, EXIT_TRANSIENT, TrainResult

from kubetrain_trainer import snapshot as snap
from kubetrain_trainer import steps as st
from kubetrain_trainer.errors import BadInput, Transient
from kubetrain_trainer.logs import error, library_output_as_logs, log, register_secret, warn
from kubetrain_trainer.settings import TrainerSettings


@dataclass
class RunReport:
    """The result plus what benchmarks and tests want to see beyond the contract."""

    result: TrainResult
    exit_code: int
    timings: dict[str, float] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """How a failed run ends: exit code and result reason."""

    exit_code: int
    reason: str
    unexpected: bool = False
    """Neither a classified error nor a recognisable network/server failure (a bug)."""


def run(settings: TrainerSettings, *, on_phase: Callable[[str], None] | None = None) -> RunReport:
    """Execute one run; never raises for expected failures (see the exit code)."""
    register_secret(settings.minio_secret_key)
    result = TrainResult(status="failed", modelName=settings.model_name)
    scratch_created = not settings.work_dir
    scratch = Path(settings.work_dir or tempfile.mkdtemp(prefix="kubetrain-train-"))
    ctx = st.RunContext(settings=settings, result=result, scratch=scratch, on_phase=on_phase)
    os.environ["BENTOML_HOME"] = str(scratch / "bentoml")
    t0 = time.perf_counter()
    try:
        with library_output_as_logs():
            _run(ctx)
        code = EXIT_OK
    except Exception as exc:
        failure = classify_failure(exc)
        code = failure.exit_code
        result.status, result.reason = "failed", failure.reason
        if failure.unexpected:
            error("run failed unexpectedly", with_traceback=True, error=result.reason)
    finally:
        ctx.watch.timings["total"] = round(time.perf_counter() - t0, 3)
        if scratch_created:
            shutil.rmtree(scratch, ignore_errors=True)
    if code != EXIT_OK:
        warn("run failed", reason=result.reason, exit_code=code)
    return RunReport(result=result, exit_code=code, timings=ctx.watch.timings, figures=ctx.figures)


def classify_failure(exc: Exception) -> Failure:
    """`BadInput` -> exit 2; `Transient`, network/server failures and bugs -> exit 75."""
    if isinstance(exc, BadInput):
        return Failure(EXIT_BAD_INPUT, f"bad input: {exc}")
    if isinstance(exc, Transient):
        return Failure(EXIT_TRANSIENT, f"transient: {exc}")
    if _looks_transient(exc):
        return Failure(EXIT_TRANSIENT, f"transient: {type(exc).__name__}: {exc}")
    return Failure(EXIT_TRANSIENT, f"internal error: {type(exc).__name__}: {exc}", unexpected=True)


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


def _run(ctx: st.RunContext) -> None:
    """The steps in order (see kubetrain_trainer.steps); a failure propagates to `run`."""
    s = ctx.settings
    bucket, manifest_key = s.manifest_location()
    # The one MinIO client: it reads the snapshot and uploads the Bento.
    client = snap.make_client(s.s3_connection(), pool_size=s.download_workers)
    snapshot = st.load_snapshot(ctx, client, bucket, manifest_key)
    data = st.prepare_data(ctx, snapshot)
    plan = st.configure_tensorflow(ctx)
    tracking = st.setup_tracking(ctx, data)
    with st.mlflow_run(ctx, tracking, snapshot, data) as run_id:
        st.log_inputs(ctx, tracking, snapshot, data, plan)
        trained = st.train(ctx, tracking, snapshot, data)
        evaluated = st.evaluate(ctx, tracking, data, trained)
        registered = st.register(ctx, tracking, data, trained, evaluated, run_id)
        decision = st.gate(ctx, tracking, snapshot, data, evaluated, registered)
        if decision.promote:
            st.package_and_promote(ctx, tracking, snapshot, data, trained, evaluated, registered)
        st.finish(ctx, tracking, snapshot, trained)
    log("done", **{k: v for k, v in json.loads(ctx.result.to_message()).items()})
