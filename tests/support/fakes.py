"""Small in-memory fakes for unit tests: no server, no network, every call recorded.

`FakeKube` stands in for `kubetrain_operator.kube.Kube`, the operator's one API client, at
the level of its generic verbs (`get`, `list_items`, `apply`, `delete`, `post_event`,
`with_timeout`). Objects are stored by API path; an apply replaces the object the way a
full server-side apply by the only field manager does (status and server-set metadata
survive, `generation` moves when the spec changes, `resourceVersion` on every write), and
a stale `metadata.resourceVersion` gets 409, as from the apiserver. `fail_next` injects
errors per (verb, path). `FakeBentoStore` is an in-memory `BentoStore`.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from kubetrain_operator.kube import Kube, KubeError
from kubetrain_operator.serving_rollout.history import StoredObject


@dataclass(frozen=True)
class PostedEvent:
    involved: dict[str, Any]
    type: str
    reason: str
    message: str
    component: str
    time: str | None


def _matches(obj: Mapping[str, Any], selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
    return all(labels.get(k) == v for k, v in wanted.items())


class FakeKube:
    """An in-memory apiserver behind the `Kube` interface the rollout uses."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.events: list[PostedEvent] = []
        self.writes: list[tuple[str, str]] = []
        """(verb, path) of every apply and delete, in order."""
        self.timeouts: list[float] = []
        self.fail_next: dict[tuple[str, str], list[KubeError]] = {}
        """(verb, path) -> errors raised by the next calls, one per call."""
        self._versions = itertools.count(1)
        self._uids = itertools.count(1)

    # -- test set-up --------------------------------------------------------------------
    def put(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store `obj` as if someone else had created it (no write is recorded)."""
        stored = copy.deepcopy(dict(obj))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{next(self._uids)}")
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def set_status(self, path: str, status: Mapping[str, Any]) -> None:
        """What a controller does: replace the status, bump the resourceVersion."""
        self.objects[path]["status"] = copy.deepcopy(dict(status))
        self.objects[path]["metadata"]["resourceVersion"] = str(next(self._versions))

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    def _maybe_fail(self, verb: str, path: str) -> None:
        queued = self.fail_next.get((verb, path))
        if queued:
            raise queued.pop(0)

    # -- the Kube interface -------------------------------------------------------------
    def with_timeout(self, timeout: float) -> FakeKube:
        self.timeouts.append(timeout)
        return self

    def get(self, path: str) -> dict[str, Any] | None:
        self._maybe_fail("GET", path)
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    def list_items(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        self._maybe_fail("LIST", path)
        prefix = path.rstrip("/") + "/"
        return [
            copy.deepcopy(obj)
            for p, obj in sorted(self.objects.items())
            if p.startswith(prefix)
            and "/" not in p[len(prefix) :]
            and _matches(obj, label_selector)
        ]

    def apply(self, path: str, obj: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
        self._maybe_fail("APPLY", path)
        desired = copy.deepcopy(dict(obj))
        meta = desired.setdefault("metadata", {})
        live = self.objects.get(path)
        wanted_version = meta.pop("resourceVersion", None)
        if wanted_version is not None and (
            live is None or live["metadata"]["resourceVersion"] != wanted_version
        ):
            raise KubeError(409, "Conflict", f"the object {path} has been modified")
        if live is None:
            meta["uid"] = f"uid-{next(self._uids)}"
            meta["generation"] = 1
        else:
            meta["uid"] = live["metadata"]["uid"]
            changed = live.get("spec") != desired.get("spec")
            meta["generation"] = live["metadata"]["generation"] + (1 if changed else 0)
            # Annotations another manager set (the Deployment controller's revision) stay.
            server_annotations = {
                k: v
                for k, v in (live["metadata"].get("annotations") or {}).items()
                if k.startswith("deployment.kubernetes.io/")
            }
            if server_annotations:
                meta["annotations"] = {**server_annotations, **(meta.get("annotations") or {})}
            if "status" in live:
                desired["status"] = live["status"]
        meta["resourceVersion"] = str(next(self._versions))
        meta["managedFields"] = [{"manager": field_manager, "operation": "Apply"}]
        self.objects[path] = desired
        self.writes.append(("APPLY", path))
        return copy.deepcopy(desired)

    def delete(self, path: str) -> bool:
        self._maybe_fail("DELETE", path)
        self.writes.append(("DELETE", path))
        return self.objects.pop(path, None) is not None

    def post_event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        *,
        component: str,
        now: str | None = None,
    ) -> bool:
        self.events.append(PostedEvent(dict(involved), type_, reason, message, component, now))
        return True


def as_kube(fake: FakeKube) -> Kube:
    """`fake` where a `Kube` is expected (it implements the part the caller uses)."""
    return cast(Kube, fake)


@dataclass
class FakeBentoStore:
    """An in-memory bucket of Bentos: {(bucket, key): last_modified}."""

    objects: dict[tuple[str, str], float] = field(default_factory=dict)
    deleted: list[tuple[str, str]] = field(default_factory=list)
    fail: Exception | None = None

    def list_objects(self, bucket: str, prefix: str) -> list[StoredObject]:
        if self.fail is not None:
            raise self.fail
        return [
            StoredObject(key, ts)
            for (b, key), ts in sorted(self.objects.items())
            if b == bucket and key.startswith(prefix) and "/" not in key[len(prefix) :]
        ]

    def delete_object(self, bucket: str, key: str) -> None:
        del self.objects[(bucket, key)]
        self.deleted.append((bucket, key))
