"""Serving rollout, the I/O half: apply the serving objects, watch the deadline, roll back.

The two entry points the operator calls (both synchronous and blocking: call them from a
sync kopf handler, which kopf runs in a thread, or via `asyncio.to_thread`):

    status = rollout_apply.on_promoted(api, watch_body, result, settings)
        # after a training run finished; `result` is the run's contract.TrainResult.
        # Returns the new `status.serving` dict, or None when nothing was touched
        # (result not promoted, or spec.serving.enabled false).

    status = rollout_apply.check(api, watch_body, settings)
        # periodically (every 10-30 s) for every watch: notices a new ReplicaSet that missed
        # its deadline and rolls back, marks a finished rollout Available, re-applies
        # spec.serving edits, re-creates a deleted Service/Ingress (or Deployment, from
        # status.serving). Returns the current `status.serving` dict, or None when the
        # watch serves nothing yet (or spec.serving.enabled is false).

`api` is a `kubernetes.client.ApiClient`; `watch_body` the DatasetWatch as a dict (kopf's
`body`); `settings` a `rollout.RolloutSettings` (None: defaults). The caller writes the
returned dict to `status.serving` (e.g. `patch.status["serving"] = status`); this module
never writes the watch's status itself, so the operator core stays the only status writer.

Errors: `rollout.ServingSpecError` (a ValueError) for a bad `spec.serving` or result, and
`RolloutError` for a serving object that belongs to someone else or that the apiserver
rejects; both name what is wrong and deserve a Warning Event, not a retry. Anything else
(`RolloutBusy` after repeated write conflicts, `kubernetes.client.ApiException` 5xx,
connection errors) is transient: retry later.

How it talks to the apiserver: plain JSON dicts over the ApiClient's REST layer, so the
objects built by `rollout` are sent exactly as built. Every write is a **server-side
apply** of the full object (field manager `kubetrain-operator`, force), which is create-or-
update in one idempotent request and removes fields the operator stopped setting (e.g. TLS).
Writes of the Deployment that change the rollout state carry the `resourceVersion` they
were computed from, so two racing callers cannot both roll back or both emit the Event:
the loser gets 409, re-reads and recomputes.

Bento history: after a promotion, `.bento` objects of the same model beyond
`spec.serving.historyLimit` are deleted from the bucket (MinIO credentials from the watch's
Secret, read at that moment and never logged); the serving and previous Bentos are never
deleted. A failure there is reported as a Warning Event and does not fail the rollout.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from kubernetes.client import ApiClient, ApiException
from kubetrain_contract import TrainResult
from kubetrain_contract.s3 import S3ConfigError, S3Connection

from kubetrain_operator import rollout
from kubetrain_operator.rollout import (
    Action,
    Release,
    RolloutSettings,
    RolloutState,
    ServingTarget,
    StoredObject,
    WatchRef,
)

log = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON


class RolloutError(Exception):
    """A rollout that retrying cannot fix; the message says what and where."""


class _Conflict(Exception):
    """The object changed since it was read (HTTP 409): re-read and recompute."""


class RolloutBusy(RuntimeError):
    """The Deployment kept changing under every retry: transient, call again later."""


# ------------------------------------------------------------------------------ REST


class Kube:
    """A thin JSON-over-REST wrapper of an ApiClient: dicts in, dicts out."""

    def __init__(self, api: ApiClient, timeout: float) -> None:
        self.api = api
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        req = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*req, _request_timeout=self.timeout)
        resp.read()
        text = resp.data.decode("utf-8") if resp.data else ""
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=text, data=None)
        return json.loads(text) if text else {}

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        items = self.request("GET", path, query={"labelSelector": label_selector}).get("items")
        return list(items or [])

    def apply(self, path: str, obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        try:
            return self.request(
                "PATCH",
                path,
                body=obj,
                query={"fieldManager": field_manager, "force": "true"},
                content_type=APPLY_CONTENT_TYPE,
            )
        except ApiException as exc:
            if exc.status == 409:
                raise _Conflict(path) from exc
            if exc.status in (400, 403, 404, 422):
                raise RolloutError(
                    f"apiserver rejected {obj.get('kind')} {path}: {_reason(exc)}"
                ) from exc
            raise

    def delete(self, path: str) -> bool:
        try:
            self.request("DELETE", path, body={"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _paths(target: ServingTarget) -> dict[str, str]:
    ns, name = target.watch.namespace, target.name
    return {
        "deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
        "replicasets": f"/apis/apps/v1/namespaces/{ns}/replicasets",
        "service": f"/api/v1/namespaces/{ns}/services/{name}",
        "ingress": f"/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses/{name}",
    }


def _selector(target: ServingTarget) -> str:
    return ",".join(f"{k}={v}" for k, v in rollout.selector_labels(target.watch.name).items())


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


# ------------------------------------------------------------------------------ events


def emit_event(
    kube: Kube,
    watch: WatchRef,
    etype: str,
    reason: str,
    message: str,
    settings: RolloutSettings,
    now: str,
) -> None:
    """Post a core/v1 Event about the watch; a failure is logged, never raised."""
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{watch.name}.", "namespace": watch.namespace},
        "involvedObject": {
            "apiVersion": rollout.WATCH_API_VERSION,
            "kind": rollout.WATCH_KIND,
            "name": watch.name,
            "namespace": watch.namespace,
            "uid": watch.uid,
        },
        "type": etype,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": settings.event_component, "host": socket.gethostname()},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        kube.request("POST", f"/api/v1/namespaces/{watch.namespace}/events", body=body)
    except Exception as exc:  # an Event is best effort: never fail a rollout over it
        log.warning("could not post Event %s for %s: %s", reason, watch.watch_id, exc)
    (log.warning if etype == "Warning" else log.info)("%s %s: %s", watch.watch_id, reason, message)


# ------------------------------------------------------------------------------ Bentos


class BentoStore(Protocol):
    """Where Bentos live; `MinioBentoStore` in production, any S3-like store in principle."""

    def list_objects(self, bucket: str, prefix: str) -> list[StoredObject]: ...

    def delete_object(self, bucket: str, key: str) -> None: ...


class MinioBentoStore:
    """BentoStore over a minio.Minio client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_secret(cls, kube: Kube, target: ServingTarget, timeout: float) -> MinioBentoStore:
        """A client for the watch's endpoint with the keys of its credentials Secret."""
        import urllib3

        from kubetrain_operator.objectstore import new_client

        ns, name = target.watch.namespace, target.credentials_secret
        secret = kube.get(f"/api/v1/namespaces/{ns}/secrets/{name}")
        if secret is None:
            raise RolloutError(f"Secret {ns}/{name} (spec.source.credentialsSecretRef) not found")
        try:
            conn = S3Connection.from_secret(target.endpoint, secret, f"{ns}/{name}")
        except S3ConfigError as exc:
            raise RolloutError(f"{exc} (spec.source.credentialsSecretRef)") from None
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)
            ),
        )
        return cls(new_client(conn, http))

    def list_objects(self, bucket: str, prefix: str) -> list[StoredObject]:
        out = []
        for obj in self.client.list_objects(bucket, prefix=prefix, recursive=False):
            if obj.is_dir or obj.object_name is None:
                continue
            ts = obj.last_modified.timestamp() if obj.last_modified else 0.0
            out.append(StoredObject(key=obj.object_name, last_modified=ts))
        return out

    def delete_object(self, bucket: str, key: str) -> None:
        self.client.remove_object(bucket, key)


def prune_bentos(store: BentoStore, state: RolloutState, limit: int) -> tuple[str, list[str]]:
    """Delete the current model's Bentos beyond `limit`; returns (bucket, deleted keys)."""
    bucket, key = rollout.parse_s3_uri(state.current.bento_uri)
    folder = key.rpartition("/")[0]
    objects = store.list_objects(bucket, f"{folder}/" if folder else "")
    doomed = rollout.bentos_to_delete(
        objects, current=state.current, previous=state.previous, limit=limit
    )
    deleted = []
    for victim in doomed:
        store.delete_object(bucket, victim)
        deleted.append(victim)
    return bucket, deleted


def _prune(
    kube: Kube,
    target: ServingTarget,
    state: RolloutState,
    settings: RolloutSettings,
    store: BentoStore | None,
    now: str,
) -> None:
    limit = target.serving.history_limit
    try:
        store = store or MinioBentoStore.from_secret(kube, target, settings.request_timeout_seconds)
        bucket, deleted = prune_bentos(store, state, limit)
    except Exception as exc:  # the rollout is done; a full bucket is the lesser evil
        emit_event(
            kube,
            target.watch,
            "Warning",
            "BentoPruneFailed",
            f"could not delete Bentos beyond historyLimit={limit}: {exc}",
            settings,
            now,
        )
        return
    if deleted:
        emit_event(
            kube,
            target.watch,
            "Normal",
            "BentosPruned",
            f"deleted {len(deleted)} Bento(s) beyond historyLimit={limit} from s3://{bucket}/: "
            + ", ".join(deleted),
            settings,
            now,
        )


# ------------------------------------------------------------------------------ applying


def _apply_all(
    kube: Kube,
    target: ServingTarget,
    state: RolloutState,
    settings: RolloutSettings,
    resource_version: str | None,
) -> dict[str, Any]:
    """Server-side apply Deployment, Service and Ingress (or delete a stale Ingress).

    Returns the Deployment as written. Raises _Conflict when `resource_version` is stale.
    """
    paths = _paths(target)
    desired = rollout.desired_objects(target, state, settings)
    _ensure_ours(kube.get(paths["service"]), target, "Service")
    live_ingress = kube.get(paths["ingress"])
    _ensure_ours(live_ingress, target, "Ingress")
    deployment = desired.deployment
    if resource_version:
        deployment["metadata"]["resourceVersion"] = resource_version
    written = kube.apply(paths["deployment"], deployment, settings.field_manager)
    kube.apply(paths["service"], desired.service, settings.field_manager)
    if desired.ingress is not None:
        kube.apply(paths["ingress"], desired.ingress, settings.field_manager)
    elif live_ingress is not None:
        kube.delete(paths["ingress"])
    return written


def _old_status(watch_body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    status = watch_body.get("status") or {}
    serving = status.get("serving") if isinstance(status, Mapping) else None
    return serving if isinstance(serving, Mapping) else None


def _read(kube: Kube, target: ServingTarget) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    paths = _paths(target)
    live = kube.get(paths["deployment"])
    if live is None:
        return None, []
    _ensure_ours(live, target, "Deployment")
    return live, kube.list(paths["replicasets"], _selector(target))


def on_promoted(
    api: ApiClient,
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
    target = rollout.parse_target(watch_body, settings)
    if not target.serving.enabled:
        log.info("%s: spec.serving.enabled is false; not rolling out", target.watch.watch_id)
        return None
    release = rollout.Release.from_result(result)
    stamp = rollout.now_rfc3339(now)
    kube = Kube(api, settings.request_timeout_seconds)
    for _ in range(max(1, settings.conflict_retries)):
        live, replicasets = _read(kube, target)
        state = RolloutState.from_annotations(
            (live or {}).get("metadata", {}).get("annotations") if live else None
        )
        obs = rollout.observe(live, replicasets) if live else None
        new_state = rollout.promote(state, obs, release, stamp)
        if new_state is None:
            assert live is not None and state is not None and obs is not None
            log.info(
                "%s: %s is already rolled out (or rolled back from); nothing to do",
                target.watch.watch_id,
                release.bento_uri,
            )
            return rollout.serving_status(
                target, state, obs, settings, now=stamp, old_status=_old_status(watch_body)
            )
        try:
            written = _apply_all(
                kube,
                target,
                new_state,
                settings,
                (live or {}).get("metadata", {}).get("resourceVersion") if live else None,
            )
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
    emit_event(
        kube,
        target.watch,
        "Normal",
        "RolloutStarted",
        f"rolling out {release.describe()} to Deployment {target.name}; {fallback}",
        settings,
        stamp,
    )
    _prune(kube, target, new_state, settings, store, stamp)
    return rollout.serving_status(
        target,
        new_state,
        rollout.observe(written, replicasets),
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
    state = rollout.state_from_status(old, stamp)
    if state is None:
        return None
    written = _apply_all(kube, target, state, settings, None)
    emit_event(
        kube,
        target.watch,
        "Normal",
        "ServingReconfigured",
        f"Deployment {target.name} was missing; re-created it serving {state.current.describe()}",
        settings,
        stamp,
    )
    return rollout.serving_status(
        target, state, rollout.observe(written, []), settings, now=stamp, old_status=old
    )


def check(
    api: ApiClient,
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
    target = rollout.parse_target(watch_body, settings)
    if not target.serving.enabled:
        return None
    stamp = rollout.now_rfc3339(now)
    kube = Kube(api, settings.request_timeout_seconds)
    paths = _paths(target)
    for _ in range(max(1, settings.conflict_retries)):
        live, replicasets = _read(kube, target)
        if live is None:
            return _recreate(kube, target, watch_body, settings, stamp)
        meta = live.get("metadata") or {}
        state = RolloutState.from_annotations(meta.get("annotations"))
        if state is None:
            return None
        obs = rollout.observe(live, replicasets)
        action = rollout.decide(state, obs)
        event: tuple[str, str, str] | None = None
        new_state = state
        deadline = target.serving.progress_deadline_seconds
        if action == Action.ROLLBACK:
            message = rollout.rollback_message(state, obs, deadline)
            new_state = rollout.rolled_back(state, message, stamp)
            event = ("Warning", "RolledBack", message)
        elif action == Action.MARK_FAILED:
            message = (
                f"{state.current.describe()} was not available within "
                f"progressDeadlineSeconds={deadline}"
                + (f" ({obs.deadline_message})" if obs.deadline_message else "")
                + "; there is no previous Bento to roll back to"
            )
            new_state = rollout.failed(state, message)
            event = ("Warning", "RolloutFailed", message)
        elif action == Action.MARK_AVAILABLE:
            new_state = rollout.available(state)
            event = (
                "Normal",
                "RolloutComplete",
                f"{state.current.describe()} serves on {obs.available}/{obs.replicas} replicas",
            )
        desired = rollout.desired_objects(target, new_state, settings)
        drifted = (
            (meta.get("annotations") or {}).get(rollout.ANN_SPEC_HASH) != desired.spec_hash
            or kube.get(paths["service"]) is None
            or (kube.get(paths["ingress"]) is None) != (desired.ingress is None)
        )
        if action == Action.NONE and not drifted:
            return rollout.serving_status(
                target, state, obs, settings, now=stamp, old_status=_old_status(watch_body)
            )
        try:
            written = _apply_all(kube, target, new_state, settings, meta.get("resourceVersion"))
        except _Conflict:
            continue
        if event is None:
            event = (
                "Normal",
                "ServingReconfigured",
                f"applied changed spec.serving to {target.name} (serving {state.current.describe()})",
            )
        emit_event(kube, target.watch, *event, settings, stamp)
        return rollout.serving_status(
            target,
            new_state,
            rollout.observe(written, replicasets),
            settings,
            now=stamp,
            old_status=_old_status(watch_body),
        )
    raise RolloutBusy(
        f"Deployment {target.watch.namespace}/{target.name} kept changing while being checked "
        f"({settings.conflict_retries} attempts); will retry"
    )


__all__ = [
    "BentoStore",
    "Kube",
    "MinioBentoStore",
    "Release",
    "RolloutBusy",
    "RolloutError",
    "RolloutSettings",
    "check",
    "emit_event",
    "on_promoted",
    "prune_bentos",
]
