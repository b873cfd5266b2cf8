"""serving_rollout.apply against an in-memory Kube (tests/support/fakes.py): which objects
are written, which Events are posted, what `status.serving` says, for every path of
`on_promoted` and `check`. The Deployment controller is played by `controller()` below;
the real one is in tests/platform/test_serving_rollout.py."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from kubetrain_contract import TrainResult
from kubetrain_operator.kube import KubeError
from kubetrain_operator.serving_rollout import RolloutBusy, RolloutError, apply, objects
from kubetrain_operator.serving_rollout.observe import REVISION_ANNOTATION
from kubetrain_operator.serving_rollout.spec import parse_target, selector_labels
from kubetrain_operator.serving_rollout.state import (
    ANN_BENTO_URI,
    ANN_MODEL_VERSION,
    ANN_PHASE,
    ANN_ROLLED_BACK_FROM,
    ANN_SPEC_HASH,
    RolloutState,
)
from kubetrain_operator.settings import RolloutSettings

from tests.support.fakes import FakeBentoStore, FakeKube, as_kube

SETTINGS = RolloutSettings(default_image="img:1", request_timeout_seconds=7.0)
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "2026-01-02T03:04:05Z"
DEP = "/apis/apps/v1/namespaces/ml/deployments/digits-serving"
SVC = "/api/v1/namespaces/ml/services/digits-serving"
ING = "/apis/networking.k8s.io/v1/namespaces/ml/ingresses/digits-serving"
RS = "/apis/apps/v1/namespaces/ml/replicasets"
BENTOS = ".kubetrain/bentos/"


def uri(version: int, model: str = "mnist") -> str:
    return f"s3://data/{BENTOS}{model}-{version}.bento"


def watch(status: dict[str, Any] | None = None, **serving: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "kubetrain.dev/v1alpha1",
        "kind": "DatasetWatch",
        "metadata": {"name": "digits", "namespace": "ml", "uid": "w-uid", "generation": 3},
        "spec": {
            "source": {
                "endpoint": "http://minio.ml:9000",
                "bucket": "data",
                "credentialsSecretRef": {"name": "creds"},
            },
            "serving": serving,
        },
    }
    if status is not None:
        body["status"] = {"serving": status}
    return body


def result(version: int) -> TrainResult:
    return TrainResult(
        status="succeeded",
        promoted=True,
        modelName="mnist",
        modelVersion=str(version),
        bentoUri=uri(version),
    )


def controller(
    kube: FakeKube, *, new_available: int, old_available: int = 0, exceeded: bool = False
) -> None:
    """What the Deployment controller reports for the Deployment's current generation."""
    dep = kube.objects[DEP]
    meta = dep["metadata"]
    gen, replicas = meta["generation"], dep["spec"]["replicas"]
    meta.setdefault("annotations", {})[REVISION_ANNOTATION] = str(gen)
    labels = selector_labels("digits")
    for revision, available in ((gen, new_available), (gen - 1, old_available)):
        if revision < 1:
            continue
        kube.put(
            f"{RS}/digits-serving-r{revision}",
            {
                "metadata": {
                    "name": f"digits-serving-r{revision}",
                    "labels": labels,
                    "annotations": {REVISION_ANNOTATION: str(revision)},
                    "ownerReferences": [{"uid": meta["uid"]}],
                },
                "status": {"availableReplicas": available},
            },
        )
    progressing = (
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        if exceeded
        else {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    )
    kube.set_status(
        DEP,
        {
            "observedGeneration": gen,
            "replicas": replicas + (1 if old_available else 0),
            "updatedReplicas": replicas,
            "readyReplicas": new_available + old_available,
            "availableReplicas": new_available + old_available,
            "conditions": [progressing],
        },
    )


def annotations(kube: FakeKube) -> dict[str, str]:
    return dict(kube.objects[DEP]["metadata"]["annotations"])


def bento_of(kube: FakeKube) -> str:
    return str(kube.objects[DEP]["spec"]["template"]["spec"]["containers"][0]["args"][1])


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def promote(
    kube: FakeKube, version: int, body: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any] | None:
    kw.setdefault("store", FakeBentoStore())
    return apply.on_promoted(
        as_kube(kube), body or watch(), result(version), SETTINGS, now=NOW, **kw
    )


def check(kube: FakeKube, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
    return apply.check(as_kube(kube), body or watch(), SETTINGS, now=NOW)


# ------------------------------------------------------------------------------ promotion


def test_first_promotion_applies_every_object_and_announces_it() -> None:
    kube = FakeKube()
    body = watch(ingress={"host": "d.example.com"})
    status = promote(kube, 1, body)
    assert kube.writes == [("APPLY", DEP), ("APPLY", SVC), ("APPLY", ING)]
    assert kube.timeouts == [SETTINGS.request_timeout_seconds]
    desired = objects.desired_objects(
        parse_target(body, SETTINGS), RolloutState.of_deployment(kube.objects[DEP]), SETTINGS
    )
    for path, want in ((DEP, desired.deployment), (SVC, desired.service), (ING, desired.ingress)):
        assert want is not None
        got = kube.objects[path]
        assert got["spec"] == want["spec"], path
        assert got["metadata"]["ownerReferences"] == want["metadata"]["ownerReferences"]
    ann = annotations(kube)
    assert ann[ANN_PHASE] == "Progressing" and ann[ANN_MODEL_VERSION] == "1"
    assert ann[ANN_SPEC_HASH] == desired.spec_hash
    [event] = kube.events
    assert (event.type, event.reason, event.component, event.time) == (
        "Normal",
        "RolloutStarted",
        SETTINGS.event_component,
        STAMP,
    )
    assert event.involved == {
        "apiVersion": "kubetrain.dev/v1alpha1",
        "kind": "DatasetWatch",
        "name": "digits",
        "namespace": "ml",
        "uid": "w-uid",
    }
    assert "mnist v1" in event.message and "no previous model" in event.message
    assert status is not None
    assert (status["phase"], status["modelVersion"], status["url"]) == (
        "Progressing",
        "1",
        "http://d.example.com/",
    )
    assert status["rolloutStarted"] == STAMP
    for cond in status["conditions"]:
        assert (cond["observedGeneration"], cond["lastTransitionTime"]) == (3, STAMP)


def test_a_replayed_result_writes_nothing() -> None:
    kube = FakeKube()
    first = promote(kube, 1)
    writes, events = list(kube.writes), list(kube.events)
    again = promote(kube, 1, watch(status=first))
    assert (kube.writes, kube.events) == (writes, events)
    assert again is not None and again["modelVersion"] == "1"
    assert again["conditions"] == (first or {})["conditions"]


def test_not_promoted_or_disabled_touches_nothing() -> None:
    kube = FakeKube()
    failed = TrainResult(status="failed", reason="exit 2")
    assert apply.on_promoted(as_kube(kube), watch(), failed, SETTINGS) is None
    assert promote(kube, 1, watch(enabled=False)) is None
    assert check(kube, watch(enabled=False)) is None
    assert check(kube) is None  # nothing served yet and no status to re-create from
    assert (kube.writes, kube.events, kube.objects) == ([], [], {})


def test_history_beyond_the_limit_is_pruned_after_a_promotion() -> None:
    kube = FakeKube()
    store = FakeBentoStore(
        {("data", f"{BENTOS}mnist-{v}.bento"): float(v) for v in range(1, 6)}
        | {("data", f"{BENTOS}fashion-1.bento"): 0.0, ("other", f"{BENTOS}mnist-1.bento"): 0.0}
    )
    promote(kube, 5, watch(historyLimit=2), store=store)
    assert store.deleted == [("data", f"{BENTOS}mnist-{v}.bento") for v in (1, 2, 3)]
    assert kube.reasons() == ["RolloutStarted", "BentosPruned"]
    pruned = kube.events[1]
    assert pruned.type == "Normal" and "historyLimit=2" in pruned.message
    assert "s3://data/" in pruned.message and f"{BENTOS}mnist-1.bento" in pruned.message


def test_a_failed_prune_is_a_warning_and_the_rollout_stands() -> None:
    kube = FakeKube()
    status = promote(kube, 1, store=FakeBentoStore(fail=OSError("bucket gone")))
    assert status is not None and status["phase"] == "Progressing"
    assert kube.reasons() == ["RolloutStarted", "BentoPruneFailed"]
    assert kube.events[1].type == "Warning" and "bucket gone" in kube.events[1].message


# ------------------------------------------------------------------------------ check


def test_check_marks_a_complete_rollout_available_once() -> None:
    kube = FakeKube()
    promote(kube, 1)
    controller(kube, new_available=1)
    status = check(kube)
    assert status is not None and status["phase"] == "Available"
    assert annotations(kube)[ANN_PHASE] == "Available"
    assert kube.reasons() == ["RolloutStarted", "RolloutComplete"]
    assert conditions(status)["Progressing"]["reason"] == "RolloutComplete"
    writes = list(kube.writes)
    assert check(kube, watch(status=status)) == status
    assert kube.writes == writes and len(kube.events) == 2


def test_check_rolls_back_a_promotion_that_missed_its_deadline() -> None:
    kube = FakeKube()
    promote(kube, 1)
    v1_template = copy.deepcopy(kube.objects[DEP]["spec"]["template"])
    controller(kube, new_available=1)
    check(kube)
    status = promote(kube, 2)
    assert status is not None and status["previousBentoUri"] == uri(1)
    assert "previous: mnist v1" in kube.events[-1].message
    controller(kube, new_available=0, old_available=1)
    status = check(kube)  # not yet past the deadline: still rolling out, v1 serving
    assert status is not None and conditions(status)["Progressing"]["reason"] == "RollingOut"
    assert "(1 available)" in conditions(status)["Progressing"]["message"]
    controller(kube, new_available=0, old_available=1, exceeded=True)
    status = check(kube)
    assert status is not None and (status["phase"], status["modelVersion"]) == ("RolledBack", "1")
    assert status["rolledBackFrom"] == uri(2)
    assert kube.objects[DEP]["spec"]["template"] == v1_template  # the old pods' template
    assert annotations(kube)[ANN_ROLLED_BACK_FROM] == uri(2)
    event = kube.events[-1]
    assert (event.type, event.reason) == ("Warning", "RolledBack")
    assert "progressDeadlineSeconds=600" in event.message and "digits-serving-r" in event.message
    rolled = conditions(status)["RolledBack"]
    assert (rolled["status"], rolled["reason"]) == ("True", "ProgressDeadlineExceeded")
    # One Event per rollback, and the failed Bento is not rolled out again.
    controller(kube, new_available=1)
    check(kube, watch(status=status))
    writes = list(kube.writes)
    promote(kube, 2, watch(status=status))
    assert kube.reasons().count("RolledBack") == 1
    assert kube.writes == writes and bento_of(kube) == uri(1)


def test_check_marks_a_first_rollout_without_fallback_failed() -> None:
    kube = FakeKube()
    promote(kube, 1)
    controller(kube, new_available=0, exceeded=True)
    status = check(kube)
    assert status is not None and status["phase"] == "Failed"
    assert kube.events[-1].reason == "RolloutFailed" and kube.events[-1].type == "Warning"
    assert "no previous Bento" in kube.events[-1].message
    rolled = conditions(status)["RolledBack"]
    assert (rolled["status"], rolled["reason"]) == ("False", "NothingToRollBackTo")
    # It comes up after all: Available, and the failure message is gone.
    controller(kube, new_available=1)
    status = check(kube, watch(status=status))
    assert status is not None and status["phase"] == "Available"
    assert conditions(status)["RolledBack"]["reason"] == "NoRollback"


def test_a_spec_edit_is_applied_once() -> None:
    kube = FakeKube()
    promote(kube, 1)
    controller(kube, new_available=1)
    status = check(kube)
    edited = watch(status=status, replicas=2)
    status = check(kube, edited)
    assert kube.writes[-2:] == [("APPLY", DEP), ("APPLY", SVC)]
    assert kube.objects[DEP]["spec"]["replicas"] == 2
    assert kube.events[-1].reason == "ServingReconfigured"
    writes, events = list(kube.writes), list(kube.events)
    check(kube, watch(status=status, replicas=2))
    assert (kube.writes, kube.events) == (writes, events)


def test_a_removed_ingress_is_deleted_and_a_missing_service_recreated() -> None:
    kube = FakeKube()
    promote(kube, 1, watch(ingress={"host": "d.example.com"}))
    del kube.objects[SVC]
    status = check(kube)
    assert ("DELETE", ING) in kube.writes and ING not in kube.objects
    assert SVC in kube.objects
    assert (
        status is not None
        and status["ingress"] == ""
        and kube.events[-1].reason == ("ServingReconfigured")
    )


def test_a_deleted_deployment_is_recreated_from_the_status() -> None:
    kube = FakeKube()
    promote(kube, 1)
    controller(kube, new_available=1)
    check(kube)
    reported = promote(kube, 2)
    del kube.objects[DEP]
    status = check(kube, watch(status=reported))
    assert status is not None and status["modelVersion"] == "2"
    assert status["previousBentoUri"] == uri(1) and status["phase"] == "Progressing"
    assert bento_of(kube) == uri(2) and annotations(kube)[ANN_BENTO_URI] == uri(2)
    assert kube.events[-1].reason == "ServingReconfigured"
    assert "was missing" in kube.events[-1].message


# ------------------------------------------------------------------------------ errors


def conflict() -> KubeError:
    return KubeError(409, "Conflict", "the object has been modified")


def test_a_lost_race_is_recomputed_and_repeated_losses_are_busy() -> None:
    kube = FakeKube()
    promote(kube, 1)
    kube.fail_next[("APPLY", DEP)] = [conflict()]
    status = promote(kube, 2)
    assert status is not None and status["modelVersion"] == "2"
    assert kube.reasons().count("RolloutStarted") == 2
    kube.fail_next[("APPLY", DEP)] = [conflict() for _ in range(SETTINGS.conflict_retries)]
    with pytest.raises(RolloutBusy, match="kept changing"):
        promote(kube, 3)
    assert kube.reasons().count("RolloutStarted") == 2 and bento_of(kube) == uri(2)
    controller(kube, new_available=1)
    kube.fail_next[("APPLY", DEP)] = [conflict() for _ in range(SETTINGS.conflict_retries)]
    with pytest.raises(RolloutBusy, match="while being checked"):
        check(kube)
    assert "RolloutComplete" not in kube.reasons()


@pytest.mark.parametrize("path", [DEP, SVC])
def test_objects_of_someone_else_are_not_taken_over(path: str) -> None:
    kube = FakeKube()
    kube.put(path, {"metadata": {"name": "digits-serving"}, "spec": {"foreign": True}})
    with pytest.raises(RolloutError, match=r"not owned by DatasetWatch ml/digits"):
        promote(kube, 1)
    assert (kube.writes, kube.events) == ([], [])
    assert kube.objects[path]["spec"] == {"foreign": True}


def test_rejected_objects_are_permanent_and_server_errors_transient() -> None:
    kube = FakeKube()
    kube.fail_next[("APPLY", DEP)] = [KubeError(422, "Invalid", "spec.replicas: Invalid value")]
    with pytest.raises(RolloutError, match=r"apiserver rejected Deployment .*spec\.replicas"):
        promote(kube, 1)
    kube.fail_next[("APPLY", DEP)] = [KubeError(503, "ServiceUnavailable", "")]
    with pytest.raises(KubeError) as err:
        promote(kube, 1)
    assert err.value.status == 503 and kube.events == []
