"""How a finished run changes the durable state: `finish_run()`, one pure transition.

The worker (`runs.py`) reads the outcome of the run's Job, and, for a success, the snapshot
manifest the run trained on (`needs_manifest`); this module then says what the status must
become. The worker writes that state *before* the follow-up side effects (the Event, the
pruning of old Jobs, the rollout hook), so a crash after the write loses nothing and a crash
before it finishes the same run again on restart.

- Success (the Job completed with a "succeeded" result): the run's snapshot becomes the
  baseline, `model` names the new version, and `lastRun.rolloutPending` is the result's
  `promoted`: the rollout hook is due until it has returned once (`rollout_result`).
- Anything else is a failure: the baseline stays, so the same changes stay pending, and
  `decisions/trigger.py` holds them back until new data or a new spec arrives.
Either way `activeRun` and `thresholdCrossedAt` are cleared.
"""

from __future__ import annotations

from dataclasses import dataclass

import kubetrain_contract as contract

from kubetrain_operator.outcome import RunOutcome, RunState
from kubetrain_operator.status import (
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    ActiveRun,
    Baseline,
    Durable,
    LastRun,
    iso,
)


@dataclass(frozen=True)
class Trained:
    """The snapshot a successful run trained on, as read back from its manifest."""

    digest: str
    objects: int


@dataclass(frozen=True)
class Finished:
    durable: Durable
    """The new durable state (write it before anything else)."""
    succeeded: bool
    event_type: str
    event_reason: str
    event_message: str

    @property
    def last_run(self) -> LastRun:
        assert self.durable.last_run is not None
        return self.durable.last_run

    @property
    def rollout_due(self) -> bool:
        """The rollout hook must be called (the run promoted a new model)."""
        return self.last_run.rollout_pending


def needs_manifest(outcome: RunOutcome) -> bool:
    """A success moves the baseline, which needs the run's manifest (digest, object count)."""
    return outcome.state is RunState.SUCCEEDED and outcome.result is not None


def finish_run(
    before: Durable, active: ActiveRun, outcome: RunOutcome, *, now: float, trained: Trained | None
) -> Finished:
    """The state after `active` ended with `outcome`; `trained` is required for a success."""
    if needs_manifest(outcome) and trained is None:
        raise ValueError(f"run {active.job_name} succeeded: its manifest must be read first")
    result = outcome.result
    finish_time = iso(now) or ""
    common = {
        "job_name": active.job_name,
        "run": active.run,
        "reason": outcome.reason,
        "message": outcome.message,
        "start_time": active.start_time,
        "finish_time": finish_time,
        "dataset_digest": active.dataset_digest,
        "manifest_key": active.manifest_key,
        "generation": active.generation,
    }
    event_message = f"Job {active.job_name}: {outcome.message}"
    if needs_manifest(outcome):
        assert result is not None and trained is not None
        last = LastRun(
            result=RESULT_SUCCEEDED,
            model_name=result.modelName,
            model_version=result.modelVersion,
            promoted=result.promoted,
            accuracy=result.accuracy,
            bento_uri=result.bentoUri,
            rollout_pending=result.promoted,
            **common,  # type: ignore[arg-type]
        )
        model = f"{result.modelName}:{result.modelVersion}" if result.modelVersion else before.model
        durable = before.with_(
            baseline=Baseline(active.manifest_key, trained.digest, trained.objects, finish_time),
            active_run=None,
            last_run=last,
            crossed_at=None,
            model=model,
        )
        return Finished(durable, True, "Normal", "TrainingSucceeded", event_message)
    last = LastRun(
        result=RESULT_FAILED,
        model_name=result.modelName if result else "",
        model_version=result.modelVersion if result else "",
        **common,  # type: ignore[arg-type]
    )
    durable = before.with_(active_run=None, last_run=last, crossed_at=None)
    return Finished(durable, False, "Warning", "TrainingFailed", event_message)


def rollout_result(last: LastRun) -> contract.TrainResult:
    """The result handed to the rollout hook, rebuilt from the status (it survives restarts)."""
    return contract.TrainResult(
        status="succeeded",
        reason=last.message,
        modelName=last.model_name,
        modelVersion=last.model_version,
        promoted=True,
        accuracy=last.accuracy,
        bentoUri=last.bento_uri,
        datasetDigest=last.dataset_digest,
    )
