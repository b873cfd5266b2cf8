"""operator outcome.py: a Job and its pod's termination message -> the run outcome."""

from __future__ import annotations

from typing import Any

import kubetrain_contract as contract
from kubetrain_operator.outcome import RunState, interpret


def job(cond: str | None, reason: str = "") -> dict[str, Any]:
    conds = [{"type": cond, "status": "True", "reason": reason, "message": "m"}] if cond else []
    return {"status": {"conditions": conds}}


def pod(code: int, message: str, finished: str = "2026-01-01T00:00:01Z") -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {"exitCode": code, "message": message, "finishedAt": finished}
                    },
                }
            ]
        },
    }


def test_outcomes() -> None:
    ok = contract.TrainResult(
        status="succeeded", reason="gate passed", modelName="m", modelVersion="4", promoted=True
    ).to_message()
    assert interpret(job(None), []).state is RunState.RUNNING
    assert interpret(job("SuccessCriteriaMet"), []).state is RunState.RUNNING
    out = interpret(job("Complete"), [pod(0, ok)])
    assert out.state is RunState.SUCCEEDED and out.result and out.result.modelVersion == "4"
    out = interpret(job("Complete"), [pod(0, "")])
    assert out.state is RunState.FAILED and out.reason == "NoResult"
    bad = contract.TrainResult(status="failed", reason="no images under prefix").to_message()
    out = interpret(job("Failed", "PodFailurePolicy"), [pod(2, bad)])
    assert out.state is RunState.FAILED and out.reason == "PodFailurePolicy"
    assert "exit code 2" in out.message and "no images under prefix" in out.message
    out = interpret(
        job("Failed", "BackoffLimitExceeded"),
        [pod(75, "Traceback...", "2026-01-01T00:00:01Z"), pod(1, "oom", "2026-01-01T00:00:09Z")],
    )
    assert (
        out.exit_code == 1 and "oom" not in out.message
    )  # log tail is not a result; Job message used
    assert "BackoffLimitExceeded" in out.message
