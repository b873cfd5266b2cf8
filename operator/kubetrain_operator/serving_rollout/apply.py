"""Serving rollout, the I/O: apply the serving objects, watch the deadline, roll back.

The two entry points the operator calls (both synchronous and blocking: call them from a
sync kopf handler, which kopf runs in a thread, or via `asyncio.to_thread`):

    status = on_promoted(kube, watch_body, result, settings)
        # after a training run finished; `result` is the run's contract.TrainResult.
        # Returns the new `status.serving` dict, or None when nothing was touched
        # (result not promoted, or spec.serving.enabled false).

    status = check(kube, watch_body, settings)
        # periodically (every 10-30 s) for every watch: notices a new ReplicaSet that missed
        # its deadline and rolls back, marks a finished rollout Available, re-applies
        # spec.serving edits, re-creates a deleted Service/Ingress (or Deployment, from
        # status.serving). Returns the current `status.serving` dict, or None when the
        # watch serves nothing yet (or spec.serving.enabled is false).

`kube` is the operator's `kubetrain_operator.kube.Kube` (its requests here use
`settings.request_timeout_seconds`); `watch_body` the DatasetWatch as a dict (kopf's
`body`); `settings` a `RolloutSettings` (None: defaults). The caller writes the returned
dict to `status.serving`; this module never writes the watch's status itself, so the
operator core stays the only status writer.

Errors: `ServingSpecError` (a ValueError) for a bad `spec.serving` or result, and
`RolloutError` for a serving object that belongs to someone else or that the apiserver
rejects; both name what is wrong and deserve a Warning Event, not a retry. Anything else
(`RolloutBusy` after repeated write conflicts, `KubeError` 5xx, connection errors) is
transient: retry later.

Every write is a **server-side apply** (`Kube.apply`) of the full object as the pure
modules built it (field manager `kubetrain-operator`, force): create-or-update in one
idempotent request that also removes fields the operator stopped setting (e.g. TLS).
Writes of the Deployment that change the rollout state carry the `resourceVersion` they
were computed from, so two racing callers cannot both roll back or both emit the Event:
the loser gets 409, re-reads and recomputes. Events go through `Kube.post_event`.

Bento history: after a promotion, `.bento` objects of the same model beyond
`spec.serving.historyLimit` (history.py decides which) are deleted from the bucket (MinIO
credentials from the watch's Secret, read at that moment and never logged). A failure
there is reported as a Warning Event and does not fail the rollout.

Why one module of this length (about 400 lines): it is the package's only Kubernetes writer; the
apply, deadline and rollback paths share the write-conflict handling, and keeping them in
one place keeps every Kubernetes write of a rollout in one file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubetrain_contract import TrainResult

from kubetrain_operator.constants import rfc3339
from kubetrain_operator.kube import Kube, KubeError
from kubetrain_operator.serving_rollout import objects, observe, state
from kubetrain_operator.serving_rollout.bentos import BentoStore, MinioBentoStore, prune_bentos
from kubetrain_operator.serving_rollout.errors import RolloutBusy, RolloutError
from kubetrain_operator.serving_rollout.observe import Action
from kubetrain_operator.serving_rollout.spec import ServingTarget, parse_target, selector
from kubetrain_operator.serving_rollout.state import Release, RolloutState
from kubetrain_operator.serving_rollout.status import serving_status
from kubetrain_operator.settings import RolloutSettings

log = logging.getLogger(__name__)


class _Conflict(Exception):
    """The object changed since it was read (HTTP 409): re-read and recompute."""


# ------------------------------------------------------------------------------ objects


def _paths(target: ServingTarget) -> dict[str, str]:
    ns, name = target.watch.namespace, target.name
    return {
        "deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
        "replicasets": f"/apis/apps/v1/namespaces/{ns}/replicasets",
        "service": f"/api/v1/namespaces/{ns}/services/{name}",
        "ingress": f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}",
    }


def _ensure_ours(obj: Mapping[str, Any] | None, target: ServingTarget, kind: str) -> None:
    """Refuse to take over an object of the same name that this watch does not own."""
    if obj is None:
        return
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    if not any(r.get("uid") == target.watch.uid for r in refs):
        raise RolloutError(
            f"{kind} {target.watch.namespace}/{target.name} exists and is not owned by "
            f"DatasetWatch {target.watch.watch_id}; rename or delete it"
        )


def _apply(kube: Kube, path: str, obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
    try:
        return kube.apply(path, obj, field_manager)
    except KubeError as exc:
        if exc.conflict:
            raise _Conflict(path) from exc
        if exc.status in (400, 403, 404, 422):
            raise RolloutError(
                f"apiserver rejected {obj.get('kind')} {path}: {exc.message or exc.reason}"
            ) from exc
        raise


def _apply_all(
    kube: Kube,
    target: ServingTarget,
    new_state: RolloutState,
    settings: RolloutSettings,
    resource_version: str | None,
) -> dict[str, Any]:
    """Server-side apply Deployment, Service and Ingress (or delete a stale Ingress).

    Returns the Deployment as written. Raises _Conflict when `resource_version` is stale.
    """
    paths = _paths(target)
    desired = objects.desired_objects(target, new_state, settings)
    _ensure_ours(kube.get(paths["service"]), target, "Service")
    live_ingress = kube.get(paths["ingress"])
    _ensure_ours(live_ingress, target, "Ingress")
    deployment = desired.deployment
    if resource_version:
        deployment["metadata"]["resourceVersion"] = resource_version
    written = _apply(kube, paths["deployment"], deployment, settings.field_manager)
    _apply(kube, paths["service"], desired.service, settings.field_manager)
    if desired.ingress is not None:
        _apply(kube, paths["ingress"], desired.ingress, settings.field_manager)
    elif live_ingress is not None:
        kube.delete(paths["ingress"])
    return written


def _read(kube: Kube, target: ServingTarget) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The live Deployment (None if there is none) and the ReplicaSets of its selector."""
    paths = _paths(target)
    live = kube.get(paths["deployment"])
    if live is None:
        return None, []
    _ensure_ours(live, target, "Deployment")
    return live, kube.list_items(paths["replicasets"], selector(target.watch.name))


def _resource_version(live: Mapping[str, Any] | None) -> str | None:
    return (live.get("metadata") or {}).get("resourceVersion") if live else None


def _old_status(watch_body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    status = watch_body.get("status") or {}
    serving = status.get("serving") if isinstance(status, Mapping) else None
    return serving if isinstance(serving, Mapping) else None


def _event(
    kube: Kube,
    target: ServingTarget,
    etype: str,
    reason: str,
    message: str,
    settings: RolloutSettings,
    now: str,
) -> None:
    """A core/v1 Event about the watch (best effort), and the same line in the log."""
    kube.post_event(
        target.watch.reference(),
        etype,
        reason,
        message,
        component=settings.event_component,
        now=now,
    )
    (log.warning if etype == "Warning" else log.info)(
        "%s %s: %s", target.watch.watch_id, reason, message
    )


def _prune(
    kube: Kube,
    target: ServingTarget,
    served: RolloutState,
    settings: RolloutSettings,
    store: BentoStore | None,
    now: str,
) -> None:
    limit = target.serving.history_limit
    try:
        store = store or MinioBentoStore.from_secret(kube, target, settings.request_timeout_seconds)
        bucket, deleted = prune_bentos(store, served, limit)
    except Exception as exc:  # the rollout is done; a full bucket is the lesser evil
        _event(
            kube,
            target,
            "Warning",
            "BentoPruneFailed",
            f"could not delete Bentos beyond historyLimit={limit}: {exc}",
            settings,
            now,
        )
        return
    if deleted:
        _event(
            kube,
            target,
            "Normal",
            "BentosPruned",
            f"deleted {len(deleted)} Bento(s) beyond historyLimit={limit} from s3://{bucket}/: "
            + ", ".join(deleted),
            settings,
            now,
        )


# ------------------------------------------------------------------------------ entry points


def on_promoted(
    kube: Kube,
    watch_body: Mapping[str, Any],
    result: TrainResult,
    settings: RolloutSettings | None = None,
    *,
    store: BentoStore | None = None,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """Roll out a finished run's Bento when the result says promoted.

    Returns the new `status.serving`, or None (nothing touched) when the result is not a
    promoted success or serving is disabled. Replaying the same result is a no-op that
    returns the current status. `store` overrides where Bentos are pruned (default: MinIO
    at the watch's endpoint with its Secret's keys).
    """
    if result.status != "succeeded" or not result.promoted:
        return None
    settings = settings or RolloutSettings()
    target = parse_target(watch_body, settings)
    if not target.serving.enabled:
        log.info("%s: spec.serving.enabled is false; not rolling out", target.watch.watch_id)
        return None
    release = Release.from_result(result)
    stamp = rfc3339(now)
    kube = kube.with_timeout(settings.request_timeout_seconds)
    for _ in range(max(1, settings.conflict_retries)):
        live, replicasets = _read(kube, target)
        current = RolloutState.of_deployment(live)
        obs = observe.observe(live, replicasets) if live else None
        new_state = state.promote(current, obs, release, stamp)
        if new_state is None:
            assert current is not None and obs is not None
            log.info(
                "%s: %s is already rolled out (or rolled back from); nothing to do",
                target.watch.watch_id,
                release.bento_uri,
            )
            return serving_status(
                target, current, obs, settings, now=stamp, old_status=_old_status(watch_body)
            )
        try:
            written = _apply_all(kube, target, new_state, settings, _resource_version(live))
        except _Conflict:
            continue
        break
    else:
        raise RolloutBusy(
            f"Deployment {target.watch.namespace}/{target.name} kept changing while being "
            f"updated ({settings.conflict_retries} attempts); will retry"
        )
    fallback = (
        f"previous: {new_state.previous.describe()}, which serves until the new pods are ready"
        if new_state.previous
        else "no previous model to fall back to"
    )
    _event(
        kube,
        target,
        "Normal",
        "RolloutStarted",
        f"rolling out {release.describe()} to Deployment {target.name}; {fallback}",
        settings,
        stamp,
    )
    _prune(kube, target, new_state, settings, store, stamp)
    return serving_status(
        target,
        new_state,
        observe.observe(written, replicasets),
        settings,
        now=stamp,
        old_status=_old_status(watch_body),
    )


def _recreate(
    kube: Kube,
    target: ServingTarget,
    watch_body: Mapping[str, Any],
    settings: RolloutSettings,
    stamp: str,
) -> dict[str, Any] | None:
    """Re-create a deleted Deployment from `status.serving`; None if nothing was served."""
    old = _old_status(watch_body)
    restored = state.state_from_status(old, stamp)
    if restored is None:
        return None
    written = _apply_all(kube, target, restored, settings, None)
    _event(
        kube,
        target,
        "Normal",
        "ServingReconfigured",
        f"Deployment {target.name} was missing; re-created it serving {restored.current.describe()}",
        settings,
        stamp,
    )
    return serving_status(
        target, restored, observe.observe(written, []), settings, now=stamp, old_status=old
    )


def _next(
    current: RolloutState, obs: observe.RolloutObservation, deadline: int, stamp: str
) -> tuple[RolloutState, tuple[str, str, str] | None]:
    """The state after this check's decision, and the Event that announces it."""
    action = observe.decide(current, obs)
    if action == Action.ROLLBACK:
        message = observe.rollback_message(current, obs, deadline)
        return state.rolled_back(current, message, stamp), ("Warning", "RolledBack", message)
    if action == Action.MARK_FAILED:
        message = observe.failure_message(current, obs, deadline)
        return state.failed(current, message), ("Warning", "RolloutFailed", message)
    if action == Action.MARK_AVAILABLE:
        message = observe.complete_message(current, obs)
        return state.available(current), ("Normal", "RolloutComplete", message)
    return current, None


def check(
    kube: Kube,
    watch_body: Mapping[str, Any],
    settings: RolloutSettings | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """Advance the rollout of one watch; returns `status.serving`, or None if none exists.

    Rolls back when the Deployment controller reports ProgressDeadlineExceeded for a
    promotion in flight (Warning Event `RolledBack`, condition RolledBack=True), marks a
    failed first rollout (`RolloutFailed`), marks a complete one Available
    (`RolloutComplete`), and re-applies the objects when `spec.serving` (or the image)
    changed or the Service/Ingress went missing, and re-creates a deleted Deployment from
    `status.serving` (`ServingReconfigured`).
    """
    settings = settings or RolloutSettings()
    target = parse_target(watch_body, settings)
    if not target.serving.enabled:
        return None
    stamp = rfc3339(now)
    kube = kube.with_timeout(settings.request_timeout_seconds)
    paths = _paths(target)
    for _ in range(max(1, settings.conflict_retries)):
        live, replicasets = _read(kube, target)
        if live is None:
            return _recreate(kube, target, watch_body, settings, stamp)
        current = RolloutState.of_deployment(live)
        if current is None:
            return None
        obs = observe.observe(live, replicasets)
        new_state, event = _next(current, obs, target.serving.progress_deadline_seconds, stamp)
        desired = objects.desired_objects(target, new_state, settings)
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        drifted = (
            annotations.get(state.ANN_SPEC_HASH) != desired.spec_hash
            or kube.get(paths["service"]) is None
            or (kube.get(paths["ingress"]) is None) != (desired.ingress is None)
        )
        if event is None and not drifted:
            return serving_status(
                target, current, obs, settings, now=stamp, old_status=_old_status(watch_body)
            )
        try:
            written = _apply_all(kube, target, new_state, settings, _resource_version(live))
        except _Conflict:
            continue
        if event is None:
            event = (
                "Normal",
                "ServingReconfigured",
                f"applied changed spec.serving to {target.name} "
                f"(serving {current.current.describe()})",
            )
        _event(kube, target, *event, settings, stamp)
        return serving_status(
            target,
            new_state,
            observe.observe(written, replicasets),
            settings,
            now=stamp,
            old_status=_old_status(watch_body),
        )
    raise RolloutBusy(
        f"Deployment {target.watch.namespace}/{target.name} kept changing while being checked "
        f"({settings.conflict_retries} attempts); will retry"
    )
