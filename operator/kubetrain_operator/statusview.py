"""What the worker writes to a watch's status: `build_status()`, state in, merge patch out. Pure.

The durable part (`status.Durable`) is state; everything else in the patch is a report
rebuilt on every write from what the worker observed (`StatusInput`): phase, the three
conditions, per-label counts, pending summary, detection health, the trigger's verdict and
`serving`. Conditions are threaded through (`Conditions` in, updated copy out) because their
`lastTransitionTime` must survive patches that do not flip them.

`SourceReport` is the mutable record detection keeps of the source's health; it lives here
because the patch is its only reader besides the worker's own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubetrain_operator.decisions.trigger import Decision
from kubetrain_operator.spec import WatchSpec
from kubetrain_operator.status import (
    COND_READY,
    COND_SOURCE_READY,
    COND_TRAINING,
    PHASE_PENDING,
    Conditions,
    Durable,
    compute_phase,
    iso,
    labels_patch,
    pending_summary,
)
from kubetrain_operator.tally import LabelCounts


@dataclass
class SourceReport:
    """Detection's view of the source, as the status shows it."""

    ready: bool = False
    """A complete listing succeeded this session and nothing has failed since."""
    reason: str = "Starting"
    message: str = "connecting to the bucket"
    notify_ok: bool = False
    notify_message: str = "notifications not set up yet"
    last_event_time: float | None = None
    last_resync_time: float | None = None
    last_resync_seconds: float = 0.0


@dataclass(frozen=True)
class StatusInput:
    now: float
    spec: WatchSpec
    durable: Durable
    source: SourceReport
    counts: Mapping[str, LabelCounts]
    """Per-label counts of the tally (empty before the first listing of a session)."""
    previous_labels: Mapping[str, Any]
    """status.labels as last written, so labels that are gone get deleted (None)."""
    max_labels: int
    decision: Decision | None = None
    serving: Mapping[str, Any] | None = None


def phase(spec: WatchSpec | None, durable: Durable, source_ready: bool) -> str:
    last = durable.last_run
    return compute_phase(
        source_ready=source_ready,
        active=durable.active_run is not None,
        suspended=bool(spec and spec.suspend),
        last_failed=bool(last and last.failed),
    )


def _copy(conditions: Conditions) -> Conditions:
    return Conditions({kind: dict(c) for kind, c in conditions.items.items()})


def _source_condition(inp: StatusInput, objects: int) -> tuple[str, str]:
    src = inp.source
    mode = inp.spec.detection.notifications
    if src.ready and mode != "None" and not src.notify_ok:
        return "ResyncOnly", src.notify_message
    if src.ready:
        reason = "Notified" if mode != "None" else "ResyncOnly"
        return reason, f"{objects} objects listed; notifications: {mode}"
    return src.reason, src.message


def build_status(inp: StatusInput, conditions: Conditions) -> tuple[dict[str, Any], Conditions]:
    """The status merge patch and the conditions it contains."""
    spec, d, src = inp.spec, inp.durable, inp.source
    conds = _copy(conditions)
    ts = iso(inp.now) or ""
    gen = spec.generation
    changes = {label: c.changes for label, c in inp.counts.items() if c.changes}
    summary, top_label, _ = pending_summary(changes, spec.trigger.threshold)
    objects = sum(c.objects for c in inp.counts.values())

    reason, message = _source_condition(inp, objects)
    conds.set(COND_SOURCE_READY, src.ready, reason, message, now=ts, generation=gen)
    last = d.last_run
    if d.active_run is not None:
        conds.set(
            COND_TRAINING,
            True,
            "JobRunning",
            f"Job {d.active_run.job_name}: {d.active_run.trigger_reason}",
            now=ts,
            generation=gen,
        )
    else:
        conds.set(
            COND_TRAINING,
            False,
            last.reason if last else "Idle",
            last.message if last else "no run yet",
            now=ts,
            generation=gen,
        )
    verdict = inp.decision.reason if inp.decision else ""
    if not src.ready:
        ready = (False, "SourceNotReady", message)
    elif spec.suspend:
        ready = (
            False,
            "Suspended",
            "spec.suspend is true: changes are counted, nothing is launched",
        )
    elif last is not None and last.failed and d.active_run is None:
        ready = (False, "TrainingFailed", last.message)
    else:
        ready = (True, "Watching", inp.decision.reason if inp.decision else "watching")
    conds.set(COND_READY, ready[0], ready[1], ready[2], now=ts, generation=gen)

    if inp.decision and inp.decision.wake_at:
        verdict += f" (until {iso(inp.decision.wake_at)})"
    mode = spec.detection.notifications
    status: dict[str, Any] = {
        **d.to_status(),
        "phase": phase(spec, d, src.ready),
        "observedGeneration": gen,
        "conditions": conds.to_status(),
        "labels": labels_patch(inp.counts, inp.previous_labels, inp.max_labels),
        "pendingChanges": sum(changes.values()),
        "pendingSummary": summary,
        "pendingLabel": top_label,
        "totalObjects": objects,
        "lastEventTime": iso(src.last_event_time, millis=True),
        "lastResyncTime": iso(src.last_resync_time),
        "lastResyncSeconds": round(src.last_resync_seconds, 3),
        "notifications": (
            "Disabled" if mode == "None" else ("Connected" if src.notify_ok else "Disconnected")
        ),
        "message": verdict,
    }
    if inp.serving is not None:
        status["serving"] = dict(inp.serving)
    return status, conds


def shown_labels(status: Mapping[str, Any]) -> dict[str, Any]:
    """The labels a written patch left in status.labels (the next patch's `previous_labels`)."""
    return {k: v for k, v in (status.get("labels") or {}).items() if v is not None}


def invalid_spec_status(
    conditions: Conditions, message: str, *, generation: int, now: float
) -> tuple[dict[str, Any], Conditions]:
    """The patch for a spec the operator cannot act on: Pending, Ready=False InvalidSpec."""
    conds = _copy(conditions)
    conds.set(COND_READY, False, "InvalidSpec", message, now=iso(now) or "", generation=generation)
    patch = {
        "phase": PHASE_PENDING,
        "observedGeneration": generation,
        "conditions": conds.to_status(),
    }
    return patch, conds
