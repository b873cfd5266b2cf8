"""Unit tests of rollout observation, decisions, status and Bento-history selection."""

from __future__ import annotations

from typing import Any

import pytest
from kubetrain_operator.serving_rollout.history import StoredObject, bentos_to_delete
from kubetrain_operator.serving_rollout.observe import (
    REVISION_ANNOTATION,
    Action,
    RolloutObservation,
    decide,
    observe,
    rollback_message,
)
from kubetrain_operator.serving_rollout.spec import ServingTarget, parse_target
from kubetrain_operator.serving_rollout.state import (
    Phase,
    Release,
    RolloutState,
    promote,
    rolled_back,
)
from kubetrain_operator.serving_rollout.status import serving_status
from kubetrain_operator.settings import RolloutSettings

V1 = Release("s3://data/.kubetrain/bentos/mnist-1.bento", "1", "mnist")
V2 = Release("s3://data/.kubetrain/bentos/mnist-2.bento", "2", "mnist")
V3 = Release("s3://data/.kubetrain/bentos/mnist-3.bento", "3", "mnist")
DEP_UID = "dep-uid"


def deployment(
    *,
    replicas: int = 1,
    generation: int = 2,
    observed: int = 2,
    total: int = 1,
    updated: int = 1,
    ready: int = 1,
    available: int = 1,
    progressing: tuple[str, str] | None = None,
    revision: str = "2",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
    }
    if progressing:
        status["conditions"] = [
            {
                "type": "Progressing",
                "status": progressing[0],
                "reason": progressing[1],
                "message": f'ReplicaSet "digits-serving-abc" {progressing[1]}',
            }
        ]
    return {
        "metadata": {
            "uid": DEP_UID,
            "generation": generation,
            "annotations": {REVISION_ANNOTATION: revision},
        },
        "spec": {"replicas": replicas},
        "status": status,
    }


def replicaset(name: str, revision: str, available: int, owner: str = DEP_UID) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "annotations": {REVISION_ANNOTATION: revision},
            "ownerReferences": [{"uid": owner}],
        },
        "status": {"availableReplicas": available},
    }


def st(
    phase: Phase, current: Release = V2, previous: Release | None = V1, **kw: Any
) -> RolloutState:
    return RolloutState(current=current, phase=phase, started="t0", previous=previous, **kw)


# ------------------------------------------------------------------------------ observe


def test_complete_rollout() -> None:
    obs = observe(deployment())
    assert obs.complete and obs.observed and not obs.deadline_exceeded


@pytest.mark.parametrize(
    "kw",
    [
        {"observed": 1},  # controller has not seen the new template yet
        {"updated": 0, "total": 1},  # new ReplicaSet not scaled up
        {"total": 2, "updated": 1},  # old pods still there
        {"available": 0},  # new pods not available
        {"replicas": 3, "total": 3, "updated": 2, "available": 3},
    ],
)
def test_incomplete_rollouts(kw: dict[str, Any]) -> None:
    assert not observe(deployment(**kw)).complete


def test_progress_deadline_exceeded() -> None:
    d = deployment(
        total=2, updated=1, available=1, progressing=("False", "ProgressDeadlineExceeded")
    )
    obs = observe(d)
    assert obs.deadline_exceeded and not obs.complete
    assert "ProgressDeadlineExceeded" in obs.deadline_message


def test_deadline_of_an_older_generation_is_ignored() -> None:
    """After a rollback the old condition must not trigger anything until re-observed."""
    d = deployment(generation=3, observed=2, progressing=("False", "ProgressDeadlineExceeded"))
    assert not observe(d).deadline_exceeded


def test_progressing_true_is_not_a_failure() -> None:
    d = deployment(available=0, progressing=("True", "ReplicaSetUpdated"))
    assert not observe(d).deadline_exceeded


def test_replicasets_split_new_and_old() -> None:
    d = deployment(total=2, updated=1, available=1, revision="2")
    rss = [
        replicaset("digits-serving-new", "2", 0),
        replicaset("digits-serving-old", "1", 1),
        replicaset("someone-else", "1", 5, owner="other"),
    ]
    obs = observe(d, rss)
    assert obs.new_replicaset == "digits-serving-new"
    assert (obs.new_available, obs.old_available) == (0, 1)


# ------------------------------------------------------------------------------ decide


def obs(**kw: Any) -> RolloutObservation:
    return RolloutObservation(replicas=1, observed=True, **kw)


@pytest.mark.parametrize(
    ("phase", "observation", "previous", "expected"),
    [
        (Phase.PROGRESSING, obs(complete=True), V1, Action.MARK_AVAILABLE),
        (Phase.FAILED, obs(complete=True), None, Action.MARK_AVAILABLE),
        (Phase.AVAILABLE, obs(complete=True), V1, Action.NONE),
        (Phase.ROLLED_BACK, obs(complete=True), None, Action.NONE),
        (Phase.PROGRESSING, obs(deadline_exceeded=True), V1, Action.ROLLBACK),
        (Phase.PROGRESSING, obs(deadline_exceeded=True), None, Action.MARK_FAILED),
        (Phase.PROGRESSING, obs(deadline_exceeded=True), V2, Action.MARK_FAILED),  # same Bento
        (Phase.AVAILABLE, obs(deadline_exceeded=True), V1, Action.NONE),  # spec-edit stall
        (Phase.ROLLED_BACK, obs(deadline_exceeded=True), None, Action.NONE),
        (Phase.FAILED, obs(deadline_exceeded=True), None, Action.NONE),
        (Phase.PROGRESSING, obs(), V1, Action.NONE),
    ],
)
def test_decide(
    phase: Phase, observation: RolloutObservation, previous: Release | None, expected: Action
) -> None:
    assert decide(st(phase, previous=previous), observation) == expected


# ------------------------------------------------------------------------------ promote


def test_first_promotion_has_no_previous() -> None:
    new = promote(None, None, V1, "t1")
    assert new == RolloutState(current=V1, phase=Phase.PROGRESSING, started="t1", previous=None)


def test_promotion_after_available_keeps_current_as_previous() -> None:
    new = promote(st(Phase.AVAILABLE, current=V1, previous=None), obs(complete=True), V2, "t")
    assert new is not None and new.previous == V1 and new.current == V2
    assert new.phase == Phase.PROGRESSING and new.rolled_back_from is None


def test_promotion_during_rollout_keeps_proven_release() -> None:
    new = promote(st(Phase.PROGRESSING, current=V2, previous=V1), obs(), V3, "t")
    assert new is not None and new.previous == V1


def test_promotion_when_observed_complete_though_not_yet_marked() -> None:
    new = promote(st(Phase.PROGRESSING, current=V2, previous=V1), obs(complete=True), V3, "t")
    assert new is not None and new.previous == V2


def test_promotion_while_nothing_proven_falls_back_to_current() -> None:
    new = promote(st(Phase.PROGRESSING, current=V1, previous=None), obs(), V2, "t")
    assert new is not None and new.previous == V1


def test_promotion_after_failed_first_rollout_has_no_previous() -> None:
    new = promote(st(Phase.FAILED, current=V1, previous=None), obs(), V2, "t")
    assert new is not None and new.previous is None


def test_promotion_after_rollback_targets_the_rolled_back_release() -> None:
    s = RolloutState(current=V1, phase=Phase.ROLLED_BACK, started="t", rolled_back_from=V2)
    new = promote(s, obs(), V3, "t2")
    assert new is not None and new.previous == V1 and new.rolled_back_from is None


def test_replayed_promotions_are_no_ops() -> None:
    assert promote(st(Phase.PROGRESSING, current=V2), obs(), V2, "t") is None
    s = RolloutState(current=V1, phase=Phase.ROLLED_BACK, started="t", rolled_back_from=V2)
    assert promote(s, obs(), V2, "t") is None


def test_rolled_back_state() -> None:
    s = rolled_back(st(Phase.PROGRESSING, current=V2, previous=V1), "timed out", "t5")
    assert s.current == V1 and s.phase == Phase.ROLLED_BACK
    assert s.rolled_back_from == V2 and s.previous is None and s.message == "timed out"
    with pytest.raises(ValueError, match="previous"):
        rolled_back(st(Phase.PROGRESSING, previous=None), "x", "t")


def test_rollback_message_names_versions_and_deadline() -> None:
    o = obs(deadline_exceeded=True, deadline_message="ReplicaSet x has timed out progressing.")
    o = RolloutObservation(**{**o.__dict__, "new_replicaset": "digits-serving-abc"})
    msg = rollback_message(st(Phase.PROGRESSING), o, 60)
    assert "v2" in msg and "v1" in msg and "progressDeadlineSeconds=60" in msg
    assert "digits-serving-abc" in msg and "timed out progressing" in msg


# ------------------------------------------------------------------------------ status


def serving_target() -> ServingTarget:
    return parse_target(
        {
            "metadata": {"name": "digits", "namespace": "ml", "uid": "u", "generation": 4},
            "spec": {
                "source": {
                    "endpoint": "http://m:9000",
                    "bucket": "b",
                    "credentialsSecretRef": {"name": "s"},
                },
                "serving": {"ingress": {"host": "d.example.com", "tlsSecretName": "tls"}},
            },
        },
        RolloutSettings(),
    )


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_status_of_a_rollout_in_progress() -> None:
    o = RolloutObservation(
        replicas=1, total=2, updated=1, ready=1, available=1, observed=True, old_available=1
    )
    s = serving_status(serving_target(), st(Phase.PROGRESSING), o, RolloutSettings(), now="t1")
    assert s["modelVersion"] == "2" and s["bentoUri"] == V2.bento_uri
    assert s["previousBentoUri"] == V1.bento_uri and s["previousModelVersion"] == "1"
    assert s["readyReplicas"] == 1 and s["url"] == "https://d.example.com/"
    assert s["deployment"] == s["service"] == s["ingress"] == "digits-serving"
    c = conditions(s)
    assert c["Available"]["status"] == "True"  # the previous model serves meanwhile
    assert c["Progressing"]["status"] == "True" and c["Progressing"]["reason"] == "RollingOut"
    assert c["RolledBack"]["status"] == "False"
    assert all(x["lastTransitionTime"] == "t1" for x in s["conditions"])
    assert [x["type"] for x in s["conditions"]] == ["Available", "Progressing", "RolledBack"]
    assert all(x["observedGeneration"] == 4 for x in s["conditions"])


def test_status_after_rollback_and_transition_times() -> None:
    before = serving_status(
        serving_target(),
        st(Phase.PROGRESSING),
        RolloutObservation(replicas=1, available=1, observed=True),
        RolloutSettings(),
        now="t1",
    )
    s = RolloutState(
        current=V1,
        phase=Phase.ROLLED_BACK,
        started="t2",
        rolled_back_from=V2,
        message="v2 timed out",
    )
    after = serving_status(
        serving_target(),
        s,
        RolloutObservation(
            replicas=1, total=1, updated=1, ready=1, available=1, observed=True, complete=True
        ),
        RolloutSettings(),
        now="t2",
        old_status=before,
    )
    c = conditions(after)
    assert after["phase"] == "RolledBack" and after["modelVersion"] == "1"
    assert after["rolledBackFrom"] == V2.bento_uri
    assert c["RolledBack"] == {
        "type": "RolledBack",
        "status": "True",
        "reason": "ProgressDeadlineExceeded",
        "message": "v2 timed out",
        "lastTransitionTime": "t2",
        "observedGeneration": 4,
    }
    assert c["Available"]["lastTransitionTime"] == "t1"  # unchanged status keeps its time
    assert c["Progressing"]["status"] == "False" and c["Progressing"]["lastTransitionTime"] == "t2"


# ------------------------------------------------------------------------------ Bento history


def objs(*names: str, folder: str = ".kubetrain/bentos/") -> list[StoredObject]:
    return [StoredObject(folder + n, float(i)) for i, n in enumerate(names)]


def rel(version: str, model: str = "mnist") -> Release:
    return Release(f"s3://data/.kubetrain/bentos/{model}-{version}.bento", version, model)


def test_history_keeps_newest_by_version() -> None:
    # Upload times deliberately disagree with version order: version wins for integers.
    stored = objs(
        "mnist-10.bento", "mnist-2.bento", "mnist-9.bento", "mnist-1.bento", "mnist-3.bento"
    )
    doomed = bentos_to_delete(stored, current=rel("10"), previous=rel("9"), limit=3)
    assert doomed == [".kubetrain/bentos/mnist-1.bento", ".kubetrain/bentos/mnist-2.bento"]


def test_history_never_deletes_serving_or_previous() -> None:
    stored = objs(*(f"mnist-{v}.bento" for v in range(1, 8)))
    # Serving v2 after a rollback, previous v1: both are the oldest, both stay.
    doomed = bentos_to_delete(stored, current=rel("2"), previous=rel("1"), limit=3)
    kept = {o.key for o in stored} - set(doomed)
    assert kept == {
        ".kubetrain/bentos/mnist-1.bento",
        ".kubetrain/bentos/mnist-2.bento",
        ".kubetrain/bentos/mnist-7.bento",
    }
    doomed = bentos_to_delete(stored, current=rel("2"), previous=rel("1"), limit=1)
    assert ".kubetrain/bentos/mnist-2.bento" not in doomed
    assert ".kubetrain/bentos/mnist-1.bento" not in doomed
    assert len(doomed) == 5


def test_history_ignores_other_models_folders_and_files() -> None:
    stored = objs(
        "mnist-1.bento",
        "mnist-2.bento",
        "mnist-3.bento",
        "mnist-big-1.bento",  # another model whose name extends ours
        "fashion-1.bento",
        "mnist-1.bento.tmp",
        "notes.txt",
    ) + objs("mnist-0.bento", folder=".kubetrain/bentos/old/")
    doomed = bentos_to_delete(stored, current=rel("3"), previous=None, limit=1)
    assert doomed == [".kubetrain/bentos/mnist-1.bento", ".kubetrain/bentos/mnist-2.bento"]


def test_history_with_non_integer_versions_uses_time() -> None:
    stored = [
        StoredObject(".kubetrain/bentos/mnist-abc.bento", 10.0),
        StoredObject(".kubetrain/bentos/mnist-def.bento", 30.0),
        StoredObject(".kubetrain/bentos/mnist-xyz.bento", 20.0),
    ]
    doomed = bentos_to_delete(stored, current=rel("def"), previous=None, limit=2)
    assert doomed == [".kubetrain/bentos/mnist-abc.bento"]


def test_history_within_limit_deletes_nothing() -> None:
    stored = objs("mnist-1.bento", "mnist-2.bento")
    assert bentos_to_delete(stored, current=rel("2"), previous=rel("1"), limit=5) == []
