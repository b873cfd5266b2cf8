"""status.serving's conditions go through status.Conditions, the operator's one condition
writer: observedGeneration on each, transition times kept, nothing else carried over."""

from __future__ import annotations

from typing import Any

from kubetrain_operator.serving_rollout.observe import RolloutObservation
from kubetrain_operator.serving_rollout.spec import parse_target
from kubetrain_operator.serving_rollout.state import Phase, Release, RolloutState
from kubetrain_operator.serving_rollout.status import CONDITION_TYPES, serving_status
from kubetrain_operator.settings import RolloutSettings

SETTINGS = RolloutSettings()
V1 = Release("s3://data/.kubetrain/bentos/mnist-1.bento", "1", "mnist")
STATE = RolloutState(current=V1, phase=Phase.AVAILABLE, started="t0")
UP = RolloutObservation(replicas=1, total=1, updated=1, ready=1, available=1, complete=True)


def status_at(generation: int, now: str, old: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {
        "metadata": {"name": "d", "namespace": "ml", "uid": "u", "generation": generation},
        "spec": {
            "source": {
                "endpoint": "http://m:9000",
                "bucket": "b",
                "credentialsSecretRef": {"name": "s"},
            }
        },
    }
    return serving_status(
        parse_target(body, SETTINGS), STATE, UP, SETTINGS, now=now, old_status=old
    )


def test_conditions_follow_the_watch_generation_and_keep_their_times() -> None:
    first = status_at(1, "t1")
    assert [c["type"] for c in first["conditions"]] == list(CONDITION_TYPES)
    assert {c["observedGeneration"] for c in first["conditions"]} == {1}
    later = status_at(2, "t2", first)
    assert {c["observedGeneration"] for c in later["conditions"]} == {2}
    assert {c["lastTransitionTime"] for c in later["conditions"]} == {"t1"}


def test_only_serving_conditions_are_carried_over() -> None:
    old = status_at(1, "t1")
    old["conditions"] = [
        *old["conditions"],
        {"type": "Stray", "status": "True", "lastTransitionTime": "t0"},
        "not a condition",
    ]
    old["conditions"][0] = {**old["conditions"][0], "lastTransitionTime": ""}
    new = status_at(1, "t2", old)
    assert [c["type"] for c in new["conditions"]] == list(CONDITION_TYPES)
    # An empty recorded time is no time: the condition gets `now`.
    assert [c["lastTransitionTime"] for c in new["conditions"]] == ["t2", "t1", "t1"]
