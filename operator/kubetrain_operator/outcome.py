"""How did a training run end? A pure reading of the Job and its pods.

What the operator reads (and what tests fake in place of kubelet + Job controller):
- `Job.status.conditions`: a `Complete` or `Failed` condition with status "True" ends the run
  (interim conditions such as `SuccessCriteriaMet` / `FailureTarget` do not);
- the pods labelled `batch.kubernetes.io/job-name=<job>`: the `trainer` container's
  `state.terminated` (or `lastState.terminated`) `exitCode` and `message`, the latter being
  the trainer's `contract.TrainResult` JSON (termination message).

Success means: the Job completed AND a result with status "succeeded" was read. A Job that
completed without a parseable result is a failure ("NoResult"): the baseline only moves when
we know what was trained.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kubetrain_contract as contract

from kubetrain_operator.jobspec import CONTAINER

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


class RunState(enum.Enum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class RunOutcome:
    state: RunState
    reason: str
    """Short CamelCase cause: Completed, NoResult, TrainerFailed, BackoffLimitExceeded, ..."""
    message: str
    """One human sentence (status, Event)."""
    result: contract.TrainResult | None = None
    exit_code: int | None = None


def _true_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def terminated_state(
    pod: Mapping[str, Any], container: str = CONTAINER
) -> Mapping[str, Any] | None:
    """The container's terminated state (current, else last), or None."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        for which in ("state", "lastState"):
            term = (status.get(which) or {}).get("terminated")
            if term:
                return term
    return None


def _pod_sort_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    term = terminated_state(pod) or {}
    return (
        str(term.get("finishedAt") or ""),
        str((pod.get("metadata") or {}).get("creationTimestamp") or ""),
    )


def _parse(message: str) -> tuple[contract.TrainResult | None, str]:
    if not message.strip():
        return None, "the trainer wrote no termination message"
    try:
        return contract.TrainResult.from_message(message), ""
    except (ValueError, TypeError) as exc:
        return None, str(exc)


def interpret(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> RunOutcome:
    complete = _true_condition(job, "Complete")
    failed = _true_condition(job, "Failed")
    if complete is None and failed is None:
        return RunOutcome(RunState.RUNNING, "Running", "the training Job is running")

    finished = sorted((p for p in pods if terminated_state(p) is not None), key=_pod_sort_key)
    if complete is not None:
        winners = [p for p in finished if (terminated_state(p) or {}).get("exitCode") == 0]
        pod = winners[-1] if winners else (finished[-1] if finished else None)
    else:
        pod = finished[-1] if finished else None
    term = terminated_state(pod) if pod is not None else None
    exit_code = term.get("exitCode") if term else None
    result, parse_error = _parse(str((term or {}).get("message") or ""))

    if complete is not None:
        if result is None:
            return RunOutcome(
                RunState.FAILED,
                "NoResult",
                f"the Job completed but its result is unreadable: {parse_error}",
                None,
                exit_code,
            )
        if result.status != "succeeded":
            return RunOutcome(
                RunState.FAILED,
                "TrainerFailed",
                f"the trainer reported {result.status!r}: {result.reason}",
                result,
                exit_code,
            )
        verdict = "promoted" if result.promoted else "not promoted"
        version = f" version {result.modelVersion}" if result.modelVersion else ""
        return RunOutcome(
            RunState.SUCCEEDED,
            "Completed",
            f"trained {result.modelName or 'model'}{version} ({verdict}): {result.reason}".rstrip(
                ": "
            ),
            result,
            exit_code,
        )

    assert failed is not None
    job_reason = str(failed.get("reason") or "Failed")
    message = f"the training Job failed ({job_reason})"
    if exit_code is not None:
        message += f", exit code {exit_code}"
    detail = (
        result.reason if result is not None and result.reason else str(failed.get("message") or "")
    )
    if detail:
        message += f": {detail}"
    return RunOutcome(RunState.FAILED, job_reason, message, result, exit_code)
