"""Unit tests of serving_rollout.apply's entry points on the paths that must not touch the API.

`kube` is None here: any Kubernetes call would raise AttributeError, so these tests prove
that a non-promoted result or disabled serving returns before any I/O.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubetrain_contract import TrainResult
from kubetrain_operator.serving_rollout.apply import check, on_promoted
from kubetrain_operator.serving_rollout.state import Phase, Release, RolloutState, state_from_status
from kubetrain_operator.spec import ServingSpecError

URI = "s3://data/.kubetrain/bentos/mnist-3.bento"


def body(**serving: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u1"},
        "spec": {
            "source": {
                "endpoint": "http://minio:9000",
                "bucket": "data",
                "credentialsSecretRef": {"name": "c"},
            },
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
    assert on_promoted(None, body(), result) is None  # type: ignore[arg-type]


def test_disabled_serving_returns_none_without_io() -> None:
    promoted = TrainResult(status="succeeded", promoted=True, modelVersion="3", bentoUri=URI)
    assert on_promoted(None, body(enabled=False), promoted) is None  # type: ignore[arg-type]
    assert check(None, body(enabled=False)) is None  # type: ignore[arg-type]


def test_bad_spec_or_result_raise_before_io() -> None:
    promoted = TrainResult(status="succeeded", promoted=True, modelVersion="3", bentoUri=URI)
    with pytest.raises(ServingSpecError, match=r"spec\.serving\.replicas"):
        on_promoted(None, body(replicas=0), promoted)  # type: ignore[arg-type]
    no_uri = TrainResult(status="succeeded", promoted=True, modelVersion="3")
    with pytest.raises(ServingSpecError, match=r"result\.bentoUri"):
        on_promoted(None, body(), no_uri)  # type: ignore[arg-type]


def test_state_from_status() -> None:
    assert state_from_status(None, "t") is None
    assert state_from_status({"phase": "Available"}, "t") is None
    got = state_from_status(
        {
            "modelName": "mnist",
            "modelVersion": "3",
            "bentoUri": URI,
            "previousModelVersion": "2",
            "previousBentoUri": URI.replace("-3", "-2"),
        },
        "t",
    )
    assert got == RolloutState(
        current=Release(URI, "3", "mnist"),
        phase=Phase.PROGRESSING,
        started="t",
        previous=Release(URI.replace("-3", "-2"), "2", "mnist"),
    )
