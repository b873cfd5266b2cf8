"""operator decisions/finish.py: the durable state after a run, and the rollout hook's input."""

from __future__ import annotations

import kubetrain_contract as contract
import pytest
from kubetrain_operator.decisions.finish import (
    Trained,
    finish_run,
    needs_manifest,
    rollout_result,
)
from kubetrain_operator.outcome import RunOutcome, RunState
from kubetrain_operator.status import ActiveRun, Baseline, Durable, LastRun, iso

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ACTIVE = ActiveRun(
    "w-train-4", 4, "2025-12-31T23:00:00Z", "changes over 2: 3=5", "k4", "sha256:d4", 7, True
)
OLD_BASELINE = Baseline("k3", "sha256:d3", 10, "2025-12-30T00:00:00Z")
BEFORE = Durable(
    run_counter=4,
    baseline=OLD_BASELINE,
    active_run=ACTIVE,
    last_run=LastRun(
        "w-train-3", 3, "Succeeded", "Completed", "ok", model_name="m", model_version="3"
    ),
    crossed_at="2025-12-31T22:59:00Z",
    model="m:3",
)


def result(**fields: object) -> contract.TrainResult:
    return contract.TrainResult(**{"status": "succeeded", "modelName": "m", **fields})  # type: ignore[arg-type]


def success(**fields: object) -> RunOutcome:
    return RunOutcome(
        RunState.SUCCEEDED, "Completed", "trained m version 4 (promoted)", result(**fields), 0
    )


def test_promoted_success_moves_the_baseline_and_makes_the_rollout_due() -> None:
    outcome = success(modelVersion="4", promoted=True, accuracy=0.97, bentoUri="s3://b/bento")
    step = finish_run(BEFORE, ACTIVE, outcome, now=NOW, trained=Trained("sha256:d4", 12))
    d = step.durable
    assert d.baseline == Baseline("k4", "sha256:d4", 12, "2026-01-01T00:00:00Z")
    assert d.active_run is None and d.crossed_at is None
    assert d.run_counter == 4 and d.model == "m:4"
    assert d.last_run == LastRun(
        job_name="w-train-4",
        run=4,
        result="Succeeded",
        reason="Completed",
        message="trained m version 4 (promoted)",
        start_time="2025-12-31T23:00:00Z",
        finish_time="2026-01-01T00:00:00Z",
        model_name="m",
        model_version="4",
        promoted=True,
        accuracy=0.97,
        bento_uri="s3://b/bento",
        dataset_digest="sha256:d4",
        manifest_key="k4",
        generation=7,
        rollout_pending=True,
    )
    assert step.succeeded and step.rollout_due and step.last_run is d.last_run
    assert (step.event_type, step.event_reason, step.event_message) == (
        "Normal",
        "TrainingSucceeded",
        "Job w-train-4: trained m version 4 (promoted)",
    )
    # What a restarted operator reads back is the same state (the crash protocol rests on it).
    assert Durable.from_status(d.to_status()) == d


def test_success_not_promoted_needs_no_rollout_and_keeps_the_model_without_a_version() -> None:
    step = finish_run(BEFORE, ACTIVE, success(), now=NOW, trained=Trained("sha256:d4", 12))
    assert step.succeeded and not step.rollout_due
    assert step.durable.model == "m:3"  # no version reported: the printer column keeps the old one
    assert step.durable.baseline is not None and step.durable.baseline.digest == "sha256:d4"


@pytest.mark.parametrize(
    "outcome",
    [
        RunOutcome(
            RunState.FAILED,
            "TrainerFailed",
            "the trainer reported 'failed': oom",
            result(status="failed", modelVersion="9"),
            1,
        ),
        RunOutcome(RunState.FAILED, "JobDeleted", "Job w-train-4 was deleted before it finished"),
        RunOutcome(RunState.FAILED, "NoResult", "the Job completed but its result is unreadable"),
    ],
)
def test_failure_keeps_the_baseline_and_model(outcome: RunOutcome) -> None:
    step = finish_run(BEFORE, ACTIVE, outcome, now=NOW, trained=None)
    d = step.durable
    assert not step.succeeded and not step.rollout_due
    assert d.baseline == OLD_BASELINE and d.model == "m:3" and d.run_counter == 4
    assert d.active_run is None and d.crossed_at is None
    last = d.last_run
    assert last is not None and last.failed and last.reason == outcome.reason
    assert last.message == outcome.message and last.finish_time == iso(NOW)
    assert (last.model_name, last.model_version) == (("m", "9") if outcome.result else ("", ""))
    assert not last.promoted and not last.rollout_pending and last.accuracy is None
    assert (step.event_type, step.event_reason) == ("Warning", "TrainingFailed")
    assert step.event_message == f"Job w-train-4: {outcome.message}"


def test_a_success_needs_its_manifest() -> None:
    assert needs_manifest(success())
    assert not needs_manifest(RunOutcome(RunState.SUCCEEDED, "Completed", "no result"))
    assert not needs_manifest(
        RunOutcome(RunState.FAILED, "TrainerFailed", "x", result(status="failed"))
    )
    with pytest.raises(ValueError, match="w-train-4 succeeded"):
        finish_run(BEFORE, ACTIVE, success(), now=NOW, trained=None)


def test_rollout_result_is_rebuilt_from_the_status() -> None:
    outcome = success(modelVersion="4", promoted=True, accuracy=0.9, bentoUri="s3://b/x")
    step = finish_run(BEFORE, ACTIVE, outcome, now=NOW, trained=Trained("sha256:d4", 12))
    again = LastRun.from_status(step.last_run.to_status())
    assert again is not None
    assert rollout_result(again) == contract.TrainResult(
        status="succeeded",
        reason="trained m version 4 (promoted)",
        modelName="m",
        modelVersion="4",
        promoted=True,
        accuracy=0.9,
        bentoUri="s3://b/x",
        datasetDigest="sha256:d4",
    )
