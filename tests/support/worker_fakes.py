"""Fakes for unit tests of the watch worker: its Kubernetes calls and its object store.

`WorkerKube` extends the rollout's `tests.support.fakes.FakeKube` (objects by API path,
`fail_next` per (verb, path), `writes` and `events` recorded) with the named calls the worker
makes (`get_watch`, `patch_watch_status` as a JSON merge patch, `create_job` answering 409
for an existing name, ...), so there is one fake of `kubetrain_operator.kube.Kube`.
`FakeStore` is an in-memory `kubetrain_operator.objectstore.ObjectStore`: objects key ->
ETag, manifests stored as their JSON text, `down` making every call fail like an
unreachable endpoint. These stand in for our own client classes only; the platform tests run
the worker against a real apiserver and MinIO.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import kubetrain_contract as contract
from kubetrain_operator.kube import KubeError
from kubetrain_operator.objectstore import SourceError
from kubetrain_operator.outcome import JOB_NAME_LABEL
from kubetrain_operator.runtime import Runtime
from kubetrain_operator.settings import OperatorSettings
from kubetrain_operator.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION
from kubetrain_operator.webhook import WebhookRouter

from tests.support.fakes import FakeKube

NAMESPACE = "ns"


def watch_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def job_path(namespace: str, name: str = "") -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs" + (f"/{name}" if name else "")


def pod_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/pods" + (f"/{name}" if name else "")


def _not_found(path: str) -> KubeError:
    return KubeError(404, "NotFound", f"{path} not found")


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place: None deletes, objects merge, the rest replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            sub = target.get(key)
            if not isinstance(sub, dict):
                sub = target[key] = {}
            _merge(sub, value)
        else:
            target[key] = copy.deepcopy(value)


class WorkerKube(FakeKube):
    """`FakeKube` plus the worker's named calls; `status_patches` in the order written."""

    def __init__(self) -> None:
        super().__init__()
        self.status_patches: list[dict[str, Any]] = []

    # -- test set-up --------------------------------------------------------------------
    def add_watch(self, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return self.put(watch_path(meta["namespace"], meta["name"]), body)

    def add_secret(self, namespace: str, name: str) -> None:
        self.put(
            f"/api/v1/namespaces/{namespace}/secrets/{name}",
            {"metadata": {"name": name}, "data": {"accessKey": "YQ==", "secretKey": "Yg=="}},
        )

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.objects[watch_path(namespace, name)].get("status") or {})

    def job_names(self, namespace: str) -> list[str]:
        prefix = job_path(namespace) + "/"
        return sorted(p[len(prefix) :] for p in self.objects if p.startswith(prefix))

    def finish_job(
        self, namespace: str, name: str, *, exit_code: int, message: str, complete: bool = True
    ) -> None:
        """What the Job controller and kubelet leave behind: a condition and a finished pod."""
        kind = "Complete" if complete else "Failed"
        self.set_status(
            job_path(namespace, name),
            {"conditions": [{"type": kind, "status": "True", "reason": kind}]},
        )
        self.put(
            pod_path(namespace, f"{name}-pod"),
            {
                "metadata": {"name": f"{name}-pod", "labels": {JOB_NAME_LABEL: name}},
                "status": {
                    "containerStatuses": [
                        {
                            "name": "trainer",
                            "state": {
                                "terminated": {
                                    "exitCode": exit_code,
                                    "message": message,
                                    "finishedAt": "2026-01-01T00:00:00Z",
                                }
                            },
                        }
                    ]
                },
            },
        )

    def emit(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A `Runtime.emit`: Events end up in `events`, as if posted."""
        involved = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind")}
        involved.update(obj.get("metadata") or {})
        self.post_event(involved, type_, reason, message, component="kubetrain-operator")

    # -- the named calls of `Kube` ------------------------------------------------------
    def get_watch(self, namespace: str, name: str) -> dict[str, Any]:
        path = watch_path(namespace, name)
        obj = self.get(path)
        if obj is None:
            raise _not_found(path)
        return obj

    def patch_watch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = watch_path(namespace, name)
        self._maybe_fail("PATCH", path + "/status")
        live = self.objects.get(path)
        if live is None:
            raise _not_found(path)
        current = live.setdefault("status", {})
        _merge(current, status)
        self.status_patches.append(copy.deepcopy(dict(status)))
        self.writes.append(("PATCH", path + "/status"))
        return copy.deepcopy(live)

    def get_secret(self, namespace: str, name: str) -> dict[str, Any]:
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        obj = self.get(path)
        if obj is None:
            raise _not_found(path)
        return obj

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> dict[str, Any]:
        path = job_path(namespace, job["metadata"]["name"])
        self._maybe_fail("POST", path)
        if path in self.objects:
            raise KubeError(409, "AlreadyExists", f"jobs {job['metadata']['name']} already exists")
        stored = copy.deepcopy(dict(job))
        stored["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ")
        created = self.put(path, stored)
        self.writes.append(("POST", path))
        return created

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(job_path(namespace, name))

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.list_items(job_path(namespace), selector)

    def delete_job(self, namespace: str, name: str) -> None:
        self.delete(job_path(namespace, name))

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return self.list_items(pod_path(namespace), selector)


def etag_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class FakeStore:
    """An in-memory bucket behind the `ObjectStore` interface; `calls` records every call."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.objects: dict[str, str] = {}
        self.manifests: dict[str, str] = {}
        self.down: SourceError | None = None
        """Set to make every call fail (an unreachable endpoint)."""
        self.webhook_error: SourceError | None = None
        self.subscribed: set[str] = set()
        self.calls: list[str] = []

    def upload(self, key: str, data: bytes | None = None) -> None:
        self.objects[key] = etag_of(data if data is not None else key.encode())

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.down is not None:
            raise self.down

    def check_bucket(self) -> None:
        self._call("check_bucket")

    def ensure_webhook(self, arn: str) -> bool:
        self._call("ensure_webhook")
        if self.webhook_error is not None:
            raise self.webhook_error
        changed = arn not in self.subscribed
        self.subscribed.add(arn)
        return changed

    def iter_listing(self) -> Iterator[tuple[str, str]]:
        self._call("iter_listing")
        for key in sorted(self.objects):
            if key.startswith(self.prefix):
                yield key, self.objects[key]

    def stat_etag(self, key: str) -> str | None:
        self._call("stat_etag")
        return self.objects.get(key)

    def put_manifest(self, key: str, manifest: contract.SnapshotManifest) -> None:
        self._call("put_manifest")
        self.manifests[key] = manifest.to_json()

    def read_manifest(self, key: str) -> contract.SnapshotManifest:
        self._call("read_manifest")
        if key not in self.manifests:
            raise SourceError("ManifestMissing", f"reading manifest {key!r}: NoSuchKey")
        return contract.SnapshotManifest.from_json(self.manifests[key].encode())


class FakeRollout:
    """`Runtime.rollout`: records the hook calls; `fail` raises from `promoted`."""

    enabled = True

    def __init__(self) -> None:
        self.promoted_calls: list[contract.TrainResult] = []
        self.checks = 0
        self.fail: Exception | None = None
        self.serving: dict[str, Any] | None = {"phase": "Serving"}

    def promoted(
        self, watch_body: Mapping[str, Any], result: contract.TrainResult
    ) -> dict[str, Any] | None:
        self.promoted_calls.append(result)
        if self.fail is not None:
            raise self.fail
        return self.serving

    def check(self, watch_body: Mapping[str, Any]) -> dict[str, Any] | None:
        self.checks += 1
        return None


class Stopped:
    """kopf's `DaemonStopped` for a test: never sleeps, stops after `waits` waits."""

    def __init__(self, waits: int = 1_000_000) -> None:
        self.left = waits
        self.reason: str | None = None

    def wait(self, seconds: float) -> None:
        self.left -= 1

    def __bool__(self) -> bool:
        return self.left <= 0


def watch_body(
    name: str = "w", *, uid: str = "uid-w", generation: int = 1, **spec: Any
) -> dict[str, Any]:
    """A DatasetWatch as the apiserver returns it; threshold 2, no debounce or cooldown."""
    trigger = {"threshold": 2, "debounce": "0s", "cooldown": "0s", "initialTraining": False}
    trigger.update(spec.pop("trigger", {}))
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "generation": generation,
        },
        "spec": {
            "source": {
                "endpoint": "http://minio.test:9000",
                "bucket": "data",
                "credentialsSecretRef": {"name": "creds"},
            },
            "trigger": trigger,
            **spec,
        },
    }


def runtime(kube: WorkerKube, *, webhook: bool = True, **settings: Any) -> Runtime:
    """A Runtime over the fakes: Events into `kube.events`, a `FakeRollout`, fast polling."""
    base = replace(
        OperatorSettings(), job_poll_seconds=0.0, status_interval_seconds=0.0, tick_seconds=0.0
    )
    rt = Runtime(
        settings=replace(base, **settings),
        kube=kube,  # type: ignore[arg-type]
        emit=kube.emit,
        webhook=WebhookRouter() if webhook else None,
    )
    rt.rollout = FakeRollout()  # type: ignore[assignment]
    return rt


def result_message(**fields: Any) -> str:
    return contract.TrainResult(**{"status": "succeeded", **fields}).to_message()
