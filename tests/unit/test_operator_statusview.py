"""operator statusview.py: the status patch built from the worker's state, conditions threaded."""

from __future__ import annotations

from typing import Any

from kubetrain_operator.decisions.trigger import Action, Decision
from kubetrain_operator.spec import parse_watch
from kubetrain_operator.status import ActiveRun, Baseline, Conditions, Durable, LastRun
from kubetrain_operator.statusview import (
    SourceReport,
    StatusInput,
    build_status,
    invalid_spec_status,
    phase,
    shown_labels,
)
from kubetrain_operator.tally import LabelCounts

from tests.support.worker_fakes import watch_body

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TS = "2026-01-01T00:00:00Z"
COUNTS = {
    "3": LabelCounts(objects=10, added=2, modified=1, deleted=0),
    "7": LabelCounts(objects=5, added=0, modified=0, deleted=0),
}
LISTED = SourceReport(
    ready=True,
    reason="Listed",
    message="bucket listed",
    notify_ok=True,
    notify_message="webhook subscription in place",
    last_event_time=NOW - 1.5,
    last_resync_time=NOW - 60,
    last_resync_seconds=0.12345,
)


def view(body: dict[str, Any] | None = None, **fields: Any) -> StatusInput:
    args: dict[str, Any] = {
        "now": NOW,
        "spec": parse_watch(body or watch_body(generation=3)),
        "durable": Durable(),
        "source": LISTED,
        "counts": COUNTS,
        "previous_labels": {},
        "max_labels": 100,
        **fields,
    }
    return StatusInput(**args)


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def test_a_watching_watch() -> None:
    decision = Decision(Action.WAIT, "debounce: waiting for 10s without changes", wake_at=NOW + 10)
    baseline = Baseline("k1", "sha256:d1", 15, TS)
    status, conds = build_status(
        view(durable=Durable(run_counter=1, baseline=baseline, model="m:1"), decision=decision),
        Conditions(),
    )
    assert conditions(status) == {
        "Ready": ("True", "Watching", "debounce: waiting for 10s without changes"),
        "SourceReady": ("True", "Notified", "15 objects listed; notifications: Webhook"),
        "Training": ("False", "Idle", "no run yet"),
    }
    assert [c["type"] for c in status["conditions"]] == ["Ready", "SourceReady", "Training"]
    assert all(
        c["observedGeneration"] == 3 and c["lastTransitionTime"] == TS for c in status["conditions"]
    )
    assert status["conditions"] == conds.to_status()
    expected = {
        "runCounter": 1,
        "baseline": baseline.to_status(),
        "activeRun": None,
        "lastRun": None,
        "thresholdCrossedAt": None,
        "model": "m:1",
        "phase": "Watching",
        "observedGeneration": 3,
        "labels": {"3": COUNTS["3"].as_status(), "7": COUNTS["7"].as_status()},
        "pendingChanges": 3,
        "pendingSummary": "3/2",
        "pendingLabel": "3",
        "totalObjects": 15,
        "lastEventTime": "2025-12-31T23:59:58.500Z",
        "lastResyncTime": "2025-12-31T23:59:00Z",
        "lastResyncSeconds": 0.123,
        "notifications": "Connected",
        "message": "debounce: waiting for 10s without changes (until 2026-01-01T00:00:10Z)",
    }
    assert {k: v for k, v in status.items() if k != "conditions"} == expected


def test_source_not_ready_is_pending_and_says_why() -> None:
    down = SourceReport(
        reason="EndpointUnreachable", message="http://minio: refused", last_event_time=None
    )
    status, _ = build_status(view(source=down, counts={}), Conditions())
    assert status["phase"] == "Pending"
    assert conditions(status)["SourceReady"] == (
        "False",
        "EndpointUnreachable",
        "http://minio: refused",
    )
    assert conditions(status)["Ready"] == ("False", "SourceNotReady", "http://minio: refused")
    assert status["notifications"] == "Disconnected"
    assert status["lastEventTime"] is None and status["lastResyncTime"] is None
    assert (status["totalObjects"], status["pendingSummary"], status["message"]) == (0, "0/2", "")


def test_notifications_down_or_off_mean_resync_only() -> None:
    lost = SourceReport(ready=True, notify_ok=False, notify_message="WebhookTargetMissing: no ARN")
    status, _ = build_status(view(source=lost), Conditions())
    assert conditions(status)["SourceReady"] == (
        "True",
        "ResyncOnly",
        "WebhookTargetMissing: no ARN",
    )
    assert status["notifications"] == "Disconnected"
    off = watch_body(generation=3, detection={"notifications": "None"})
    status, _ = build_status(view(off, source=lost), Conditions())
    assert conditions(status)["SourceReady"] == (
        "True",
        "ResyncOnly",
        "15 objects listed; notifications: None",
    )
    assert status["notifications"] == "Disabled"


def test_training_failed_and_suspended() -> None:
    active = ActiveRun("w-train-2", 2, TS, "changes over 2: 3=3", "k2", "sha256:d2", 3, True)
    failed = LastRun("w-train-1", 1, "Failed", "BackoffLimitExceeded", "the training Job failed")
    status, _ = build_status(
        view(durable=Durable(run_counter=2, active_run=active, last_run=failed)), Conditions()
    )
    assert status["phase"] == "Training"
    assert conditions(status)["Training"] == (
        "True",
        "JobRunning",
        "Job w-train-2: changes over 2: 3=3",
    )
    assert conditions(status)["Ready"] == ("True", "Watching", "watching")

    status, _ = build_status(view(durable=Durable(run_counter=1, last_run=failed)), Conditions())
    assert status["phase"] == "Failed"
    assert conditions(status)["Training"] == (
        "False",
        "BackoffLimitExceeded",
        "the training Job failed",
    )
    assert conditions(status)["Ready"] == ("False", "TrainingFailed", "the training Job failed")

    suspended = watch_body(generation=3, suspend=True)
    status, _ = build_status(view(suspended, durable=Durable(last_run=failed)), Conditions())
    assert status["phase"] == "Suspended"
    assert conditions(status)["Ready"] == (
        "False",
        "Suspended",
        "spec.suspend is true: changes are counted, nothing is launched",
    )
    assert phase(None, Durable(), True) == "Watching"
    assert phase(None, Durable(active_run=active), False) == "Pending"


def test_labels_that_are_gone_are_deleted_and_not_remembered() -> None:
    status, _ = build_status(view(previous_labels={"3": {}, "9": {}}, max_labels=1), Conditions())
    assert status["labels"] == {"9": None, "3": COUNTS["3"].as_status()}
    assert shown_labels(status) == {"3": COUNTS["3"].as_status()}


def test_conditions_keep_their_transition_time_and_the_input_is_not_changed() -> None:
    _, first = build_status(view(), Conditions())
    before = first.to_status()
    later = view(now=NOW + 100, source=SourceReport(ready=True, notify_ok=True))
    status, second = build_status(later, first)
    assert first.to_status() == before
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    assert times == {"Ready": TS, "SourceReady": TS, "Training": TS}
    down = view(now=NOW + 200, source=SourceReport(reason="ListingFailed", message="x"))
    status, _ = build_status(down, second)
    times = {c["type"]: c["lastTransitionTime"] for c in status["conditions"]}
    assert times == {
        "Ready": "2026-01-01T00:03:20Z",
        "SourceReady": "2026-01-01T00:03:20Z",
        "Training": TS,
    }


def test_serving_is_reported_when_known() -> None:
    status, _ = build_status(view(), Conditions())
    assert "serving" not in status
    status, _ = build_status(view(serving={"phase": "Serving", "model": "m:1"}), Conditions())
    assert status["serving"] == {"phase": "Serving", "model": "m:1"}


def test_invalid_spec() -> None:
    _, conds = build_status(view(), Conditions())
    patch, after = invalid_spec_status(
        conds, "spec.trigger.threshold: must be >= 1", generation=4, now=NOW + 5
    )
    assert patch["phase"] == "Pending" and patch["observedGeneration"] == 4
    assert set(patch) == {"phase", "observedGeneration", "conditions"}
    ready = after.get("Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"], ready["message"], ready["observedGeneration"]) == (
        "False",
        "InvalidSpec",
        "spec.trigger.threshold: must be >= 1",
        4,
    )
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:05Z"
    assert conds.get("Ready")["reason"] == "Watching"  # type: ignore[index]
    assert patch["conditions"] == after.to_status()
