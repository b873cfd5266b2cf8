"""operator status.py: durable state round trip, conditions, phase, pending summary."""

from __future__ import annotations

from kubetrain_operator.status import (
    ActiveRun,
    Baseline,
    Conditions,
    Durable,
    LastRun,
    compute_phase,
    labels_patch,
    pending_summary,
)
from kubetrain_operator.tally import LabelCounts


def test_durable_roundtrip() -> None:
    d = Durable(
        run_counter=3,
        baseline=Baseline("k", "sha256:x", 10, "2026-01-01T00:00:00Z"),
        active_run=ActiveRun("w-train-3", 3, "t", "why", "k2", "sha256:y", 2, True),
        last_run=LastRun("w-train-2", 2, "Succeeded", "Completed", "ok", accuracy=0.97),
        crossed_at="2026-01-01T00:00:00Z",
        model="m:2",
    )
    assert Durable.from_status(d.to_status()) == d
    assert Durable.from_status(None) == Durable()
    assert Durable().to_status()["activeRun"] is None  # merge patch deletes it


def test_conditions_keep_transition_time_until_status_changes() -> None:
    c = Conditions()
    assert c.set("Ready", True, "Watching", "ok", now="t1", generation=1)
    assert not c.set("Ready", True, "Watching", "ok", now="t2", generation=1)
    assert c.get("Ready")["lastTransitionTime"] == "t1"  # type: ignore[index]
    c.set("Ready", True, "Watching", "new message", now="t3", generation=2)
    assert c.get("Ready")["lastTransitionTime"] == "t1"  # type: ignore[index]
    c.set("Ready", False, "Failed", "x", now="t4", generation=2)
    assert c.get("Ready")["lastTransitionTime"] == "t4"  # type: ignore[index]
    again = Conditions.from_status(c.to_status())
    assert again.items == c.items


def test_phase_priority() -> None:
    assert (
        compute_phase(source_ready=False, active=True, suspended=True, last_failed=True)
        == "Pending"
    )
    assert (
        compute_phase(source_ready=True, active=True, suspended=True, last_failed=True)
        == "Training"
    )
    assert (
        compute_phase(source_ready=True, active=False, suspended=True, last_failed=True)
        == "Suspended"
    )
    assert (
        compute_phase(source_ready=True, active=False, suspended=False, last_failed=True)
        == "Failed"
    )
    assert (
        compute_phase(source_ready=True, active=False, suspended=False, last_failed=False)
        == "Watching"
    )


def test_pending_summary_and_labels_patch() -> None:
    assert pending_summary({"3": 143, "9": 12, "1": 143}, 200) == ("143/200", "1", 143)
    assert pending_summary({}, 200) == ("0/200", "", 0)
    counts = {"a": LabelCounts(5, 1, 0, 0), "b": LabelCounts(7, 0, 0, 0)}
    patch = labels_patch(counts, {"gone": {}, "a": {}}, limit=10)
    assert patch["gone"] is None
    assert patch["a"] == {"objects": 5, "added": 1, "modified": 0, "deleted": 0, "changes": 1}
    assert list(labels_patch(counts, None, limit=1)) == ["a"]
