"""Reading a live Deployment, and deciding what the periodic check must do about it. Pure.

**The deadline** is the Deployment's own `progressDeadlineSeconds`: the Deployment
controller sets condition `Progressing=False, reason=ProgressDeadlineExceeded` when the new
ReplicaSet makes no progress for that long, which is the faithful, restart-proof signal
("the new ReplicaSet is not available within a deadline"). `observe()` reads it together
with the Deployment's and ReplicaSets' counts, like `kubectl rollout status`; only a status
about the current generation counts. `decide()` turns (state, observation) into one
`Action`; the messages of a rollback or failure are built here too, from the same facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubetrain_operator.serving_rollout.state import Phase, RolloutState

#: Set by the Deployment controller on the Deployment and on each of its ReplicaSets.
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def _get(obj: Mapping[str, Any], path: str, default: Any) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or cur.get(part) is None:
            return default
        cur = cur[part]
    return cur


def _condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in _get(obj, "status.conditions", []) or []:
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond
    return None


@dataclass(frozen=True)
class RolloutObservation:
    """What the Deployment and its ReplicaSets say about the rollout right now."""

    replicas: int
    """Desired (spec.replicas)."""
    total: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    observed: bool = False
    """The controller has seen the current generation (status is about this template)."""
    complete: bool = False
    """Every desired pod runs the current template and is available; no old pods remain."""
    deadline_exceeded: bool = False
    """The controller reports Progressing=False/ProgressDeadlineExceeded for this template."""
    deadline_message: str = ""
    new_replicaset: str = ""
    new_available: int = 0
    old_available: int = 0
    """Available pods of older ReplicaSets: the previous model still serving."""


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = _get(obj, "metadata.ownerReferences", []) or []
    return any(isinstance(r, Mapping) and r.get("uid") == uid for r in refs)


def observe(
    deployment: Mapping[str, Any], replicasets: Iterable[Mapping[str, Any]] = ()
) -> RolloutObservation:
    """Summarize a live Deployment (and the ReplicaSets it owns) like `kubectl rollout status`."""
    replicas = int(_get(deployment, "spec.replicas", 1))
    status = deployment.get("status") or {}
    generation = int(_get(deployment, "metadata.generation", 0))
    observed = int(status.get("observedGeneration") or 0) >= generation
    total = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    complete = observed and updated >= replicas and total == updated and available >= updated
    progressing = _condition(deployment, "Progressing")
    exceeded = bool(
        observed
        and not complete
        and progressing is not None
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    )
    uid = str(_get(deployment, "metadata.uid", ""))
    revision = str(
        (_get(deployment, "metadata.annotations", {}) or {}).get(REVISION_ANNOTATION, "")
    )
    new_rs, new_available, old_available = "", 0, 0
    for rs in replicasets:
        if uid and not _owned_by(rs, uid):
            continue
        rs_revision = str((_get(rs, "metadata.annotations", {}) or {}).get(REVISION_ANNOTATION, ""))
        rs_available = int(_get(rs, "status.availableReplicas", 0) or 0)
        if revision and rs_revision == revision:
            new_rs, new_available = str(_get(rs, "metadata.name", "")), rs_available
        else:
            old_available += rs_available
    return RolloutObservation(
        replicas=replicas,
        total=total,
        updated=updated,
        ready=ready,
        available=available,
        observed=observed,
        complete=complete,
        deadline_exceeded=exceeded,
        deadline_message=str(progressing.get("message", "")) if exceeded and progressing else "",
        new_replicaset=new_rs,
        new_available=new_available,
        old_available=old_available,
    )


class Action(StrEnum):
    NONE = "None"
    MARK_AVAILABLE = "MarkAvailable"
    ROLLBACK = "Rollback"
    MARK_FAILED = "MarkFailed"


def decide(state: RolloutState, obs: RolloutObservation) -> Action:
    """What the periodic check must do about the rollout."""
    if obs.complete:
        # Failed -> Available too: a slow Bento that came up after all is serving now.
        return (
            Action.MARK_AVAILABLE
            if state.phase in (Phase.PROGRESSING, Phase.FAILED)
            else Action.NONE
        )
    if obs.deadline_exceeded and state.phase == Phase.PROGRESSING:
        # Only a promotion in flight is rolled back; a stall after a spec edit (phase
        # Available) is reported in the conditions, since going back to an older Bento
        # would not cure it.
        if state.previous and state.previous.bento_uri != state.current.bento_uri:
            return Action.ROLLBACK
        return Action.MARK_FAILED
    return Action.NONE


def rollback_message(state: RolloutState, obs: RolloutObservation, deadline: int) -> str:
    detail = f" ({obs.deadline_message})" if obs.deadline_message else ""
    target = state.previous.describe() if state.previous else "nothing"
    return (
        f"{state.current.describe()} was not available within progressDeadlineSeconds={deadline}"
        f"{detail}: new ReplicaSet {obs.new_replicaset or '?'} has {obs.new_available}/"
        f"{obs.replicas} available; rolled back to {target}"
    )


def failure_message(state: RolloutState, obs: RolloutObservation, deadline: int) -> str:
    """Why a first rollout (nothing to roll back to) is marked Failed."""
    return (
        f"{state.current.describe()} was not available within "
        f"progressDeadlineSeconds={deadline}"
        + (f" ({obs.deadline_message})" if obs.deadline_message else "")
        + "; there is no previous Bento to roll back to"
    )


def complete_message(state: RolloutState, obs: RolloutObservation) -> str:
    return f"{state.current.describe()} serves on {obs.available}/{obs.replicas} replicas"
