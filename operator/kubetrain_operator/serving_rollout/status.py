"""`status.serving`: the report of one watch's rollout, recomputed on every call. Pure.

The status is never an input to a decision (the Deployment's annotations are; see
state.py): it is rebuilt from the state and a fresh observation each time, so it cannot
drift from the cluster. Its conditions go through the operator's one condition writer,
`kubetrain_operator.status.Conditions`: `lastTransitionTime` moves only when a
condition's status does, and each condition carries the watch's `observedGeneration`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubetrain_operator.serving_rollout.objects import serving_url
from kubetrain_operator.serving_rollout.observe import RolloutObservation
from kubetrain_operator.serving_rollout.spec import ServingTarget
from kubetrain_operator.serving_rollout.state import Phase, RolloutState
from kubetrain_operator.settings import RolloutSettings
from kubetrain_operator.status import Conditions

COND_AVAILABLE = "Available"
COND_PROGRESSING = "Progressing"
COND_ROLLED_BACK = "RolledBack"
CONDITION_TYPES = (COND_AVAILABLE, COND_PROGRESSING, COND_ROLLED_BACK)


def _conditions(state: RolloutState, obs: RolloutObservation) -> list[tuple[str, bool, str, str]]:
    """(type, status, reason, message) of each serving condition."""
    current = state.current
    prev_desc = state.previous.describe() if state.previous else "the previous model"
    up = obs.available >= obs.replicas
    out = [
        (
            COND_AVAILABLE,
            up,
            "MinimumReplicasAvailable" if up else "MinimumReplicasUnavailable",
            f"{obs.available}/{obs.replicas} replicas available",
        )
    ]
    if obs.complete:
        out.append(
            (
                COND_PROGRESSING,
                False,
                "RolloutComplete",
                f"{current.describe()} serves on every replica",
            )
        )
    elif obs.deadline_exceeded:
        out.append(
            (
                COND_PROGRESSING,
                False,
                "ProgressDeadlineExceeded",
                obs.deadline_message or "the new ReplicaSet made no progress within the deadline",
            )
        )
    elif state.phase == Phase.ROLLED_BACK:
        out.append(
            (
                COND_PROGRESSING,
                True,
                "RollingBack",
                f"rolling back to {current.describe()}: {obs.available}/{obs.replicas} available",
            )
        )
    else:
        out.append(
            (
                COND_PROGRESSING,
                True,
                "RollingOut",
                f"rolling out {current.describe()}: {obs.new_available}/{obs.replicas} new replicas "
                f"available; {prev_desc} serves meanwhile ({obs.old_available} available)",
            )
        )
    if state.rolled_back_from is not None:
        out.append((COND_ROLLED_BACK, True, "ProgressDeadlineExceeded", state.message))
    elif state.phase == Phase.FAILED:
        out.append((COND_ROLLED_BACK, False, "NothingToRollBackTo", state.message))
    else:
        out.append((COND_ROLLED_BACK, False, "NoRollback", "no rollback since the last promotion"))
    return out


def serving_status(
    target: ServingTarget,
    state: RolloutState,
    obs: RolloutObservation,
    settings: RolloutSettings,
    *,
    now: str,
    old_status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`status.serving` of the watch, recomputed from the Deployment's state and status."""
    old = [
        c
        for c in (old_status or {}).get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") in CONDITION_TYPES
    ]
    conditions = Conditions.from_status(old)
    for ctype, ok, reason, message in _conditions(state, obs):
        conditions.set(ctype, ok, reason, message, now=now, generation=target.watch.generation)
    status: dict[str, Any] = {
        "phase": str(state.phase),
        "modelName": state.current.model_name,
        "modelVersion": state.current.model_version,
        "bentoUri": state.current.bento_uri,
        "previousModelVersion": state.previous.model_version if state.previous else "",
        "previousBentoUri": state.previous.bento_uri if state.previous else "",
        "rolledBackFrom": state.rolled_back_from.bento_uri if state.rolled_back_from else "",
        "deployment": target.name,
        "service": target.name,
        "ingress": target.name if target.serving.ingress else "",
        "url": serving_url(target, settings),
        "replicas": obs.replicas,
        "readyReplicas": obs.ready,
        "availableReplicas": obs.available,
        "updatedReplicas": obs.updated,
        "conditions": conditions.to_status(),
    }
    if state.started:  # a date-time in the CRD schema: omitted rather than empty
        status["rolloutStarted"] = state.started
    return status
