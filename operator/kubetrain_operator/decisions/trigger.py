"""Should a watch launch a training run now? One pure function, `decide()`.

Rules, in order (the first that applies wins):

1. **One run at a time**: an active run means WAIT; changes keep being counted and, when the
   run finishes, are measured against the new baseline, so they count toward the next run.
2. **Source not ready** (no complete listing yet): WAIT, counts are not trustworthy.
3. **Crossing**: a label crosses when its changes are *strictly greater* than `threshold`.
   With `initialTraining`, a watch with no baseline (never trained) and a non-empty bucket
   also crosses ("initial"). Nothing crossing means IDLE.
4. **Suspend**: a crossing is reported (status/Events) but nothing launches.
5. **After a failure**, the same pending changes do not relaunch (it would fail the same way,
   every cooldown): wait for new data changes after the failure or a new spec generation.
6. **Cooldown**: at least `cooldown` between the end of the previous run and the next start.
7. **Debounce**: launch only after `debounce` without any change (uploads arrive in bursts),
   but never later than `maxDelay` after the crossing was first seen, so a steady trickle of
   uploads cannot starve training forever.

Times are plain float seconds (epoch) so tests drive them directly.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Action(enum.Enum):
    IDLE = "Idle"
    """Nothing crosses the threshold."""
    WAIT = "Wait"
    """Something crosses (or a run is active) but a rule holds the launch back."""
    LAUNCH = "Launch"


@dataclass(frozen=True)
class TriggerInput:
    now: float
    threshold: int
    debounce: float
    cooldown: float
    max_delay: float
    initial_training: bool
    suspended: bool
    active_run: bool
    source_ready: bool
    has_baseline: bool
    """A successful run exists (status.baseline is set)."""
    live_objects: int
    changes: Mapping[str, int]
    """Per-label changes against the baseline."""
    last_change_time: float | None = None
    """When the live state last changed (notification or resync correction)."""
    crossed_at: float | None = None
    """When the current crossing was first seen (None: not crossed before)."""
    last_finish_time: float | None = None
    """When the previous run finished (either way)."""
    last_run_failed: bool = False
    spec_changed_since_last_run: bool = False
    """The watch's generation differs from the one the last run was launched with."""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    """Why, for people (status message, logs)."""
    crossing: tuple[tuple[str, int], ...] = ()
    """Labels strictly over the threshold, most changed first (empty for an initial run)."""
    crossed: bool = False
    """The launch condition holds (threshold crossed or initial training due)."""
    wake_at: float | None = None
    """When waiting, the earliest time the decision may change without new input."""
    trigger_reason: str = ""
    """For KUBETRAIN_TRIGGER_REASON and the Job annotation when launching."""


def crossing_labels(changes: Mapping[str, int], threshold: int) -> tuple[tuple[str, int], ...]:
    """Labels with changes strictly greater than threshold, most changed first, then by name."""
    over = [(label, n) for label, n in changes.items() if n > threshold]
    over.sort(key=lambda item: (-item[1], item[0]))
    return tuple(over)


def describe_crossing(crossing: tuple[tuple[str, int], ...], threshold: int) -> str:
    shown = ", ".join(f"{label}={n}" for label, n in crossing[:10])
    more = f" (+{len(crossing) - 10} more)" if len(crossing) > 10 else ""
    return f"changes over threshold {threshold}: {shown}{more}"


def decide(inp: TriggerInput) -> Decision:
    if inp.active_run:
        return Decision(
            Action.WAIT, "a training run is active; new changes count toward the next run"
        )
    if not inp.source_ready:
        return Decision(Action.WAIT, "waiting for the first complete listing of the bucket")

    crossing = crossing_labels(inp.changes, inp.threshold)
    initial = inp.initial_training and not inp.has_baseline and inp.live_objects > 0
    if crossing:
        trigger_reason = describe_crossing(crossing, inp.threshold)
    elif initial:
        trigger_reason = f"initial training on {inp.live_objects} objects"
    else:
        return Decision(Action.IDLE, "no label has more changes than the threshold")

    def wait(reason: str, wake_at: float | None = None) -> Decision:
        return Decision(
            Action.WAIT, reason, crossing, True, wake_at=wake_at, trigger_reason=trigger_reason
        )

    if inp.suspended:
        return wait("suspended (spec.suspend=true)")
    if inp.last_run_failed and not inp.spec_changed_since_last_run:
        finished = inp.last_finish_time or 0.0
        if inp.last_change_time is None or inp.last_change_time <= finished:
            return wait("the last run failed; waiting for new data changes or a spec update")
    if inp.last_finish_time is not None and inp.now < inp.last_finish_time + inp.cooldown:
        until = inp.last_finish_time + inp.cooldown
        return wait("cooldown after the previous run", until)
    crossed_at = inp.crossed_at if inp.crossed_at is not None else inp.now
    deadline = crossed_at + inp.max_delay
    if inp.last_change_time is not None and inp.debounce > 0 and inp.now < deadline:
        quiet_at = inp.last_change_time + inp.debounce
        if inp.now < quiet_at:
            return wait(
                f"debounce: waiting for {inp.debounce:g}s without changes", min(quiet_at, deadline)
            )
    return Decision(Action.LAUNCH, trigger_reason, crossing, True, trigger_reason=trigger_reason)
