"""Unit tests of rollout_apply's entry points on the paths that must not touch the API.

`api` is None here: any Kubernetes call would raise AttributeError, so these tests prove
that a non-promoted result or disabled serving returns before any I/O.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubetrain_contract import TrainResult
from kubetrain_operator import rollout, rollout_apply

URI = "s3://data/.kubetrain/bentos/mnist-3.bento"


def body(**serving: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u1"},
        "spec": {
            "source": {"endpoint": "http://minio:9000", "credentialsSecretRef": {"name": "c"}},
            "serving": serving,
        },
    }


@pytest.mark.parametrize(
    "result",
    [
        TrainResult(status="succeeded", promoted=False, modelVersion="3", bentoUri=URI),
        TrainResult(status="failed", reason="exit 2: bad input"),
        TrainResult(status="failed", promoted=True, modelVersion="3", bentoUri=URI),
    ],
)
def test_not_promoted_returns_none_without_io(result: TrainResult) -> None:
    assert rollout_apply.on_promoted(None, body(), result) is None  # type: ignore[arg-type]


def test_disabled_serving_returns_none_without_io() -> None:
    promoted = TrainResult(status="succeeded", promoted=True, modelVersion="3", bentoUri=URI)
    assert rollout_apply.on_promoted(None, body(enabled=False), promoted) is None  # type: ignore[arg-type]
    assert rollout_apply.check(None, body(enabled=False)) is None  # type: ignore[arg-type]


def test_bad_spec_or_result_raise_before_io() -> None:
    promoted = TrainResult(status="succeeded", promoted=True, modelVersion="3", bentoUri=URI)
    with pytest.raises(rollout.ServingSpecError, match=r"spec\.serving\.replicas"):
        rollout_apply.on_promoted(None, body(replicas=0), promoted)  # type: ignore[arg-type]
    no_uri = TrainResult(status="succeeded", promoted=True, modelVersion="3")
    with pytest.raises(rollout.ServingSpecError, match=r"result\.bentoUri"):
        rollout_apply.on_promoted(None, body(), no_uri)  # type: ignore[arg-type]


def test_state_from_status() -> None:
    assert rollout.state_from_status(None, "t") is None
    assert rollout.state_from_status({"phase": "Available"}, "t") is None
    got = rollout.state_from_status(
        {
            "modelName": "mnist",
            "modelVersion": "3",
            "bentoUri": URI,
            "previousModelVersion": "2",
            "previousBentoUri": URI.replace("-3", "-2"),
        },
        "t",
    )
    assert got == rollout.RolloutState(
        current=rollout.Release(URI, "3", "mnist"),
        phase=rollout.Phase.PROGRESSING,
        started="t",
        previous=rollout.Release(URI.replace("-3", "-2"), "2", "mnist"),
    )
