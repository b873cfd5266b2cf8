"""The per-watch worker: the session and the loop that drive detection and the run lifecycle.

It runs as a kopf *sync daemon* (one thread per DatasetWatch) and orchestrates three pieces
that share a `context.WatchContext`:

    session start: fresh GET of the watch (status = durable state), Secret -> MinIO client,
      `Detection.start` (baseline manifest from the bucket, notifications up, full listing),
      `Runs.adopt_jobs` (Jobs found by labels)
    loop (every tick): `Detection.tick` (drain notifications into the tally -> probe ->
      resync when due or after a reconnect) -> `Runs.tick` (poll the active Job, or evaluate
      the trigger and launch; the rollout hook) -> patch status (throttled)

Durability (no local disk): every state transition that matters is written to the watch's
status *before* the side effect it guards, and each side effect is idempotent (the launch
and finish sequences are spelled out in `runs.py`). A crash between any two steps is resumed
by the next session from the status (and from the Jobs found by name + labels), never losing
a run and never creating a second Job.

kopf applies a daemon's `patch` only when the daemon returns; this loop never returns while
the watch exists, so it patches status directly through the API (`Kube.patch_watch_status`),
the patch being built by the pure `statusview.build_status`.

Errors: a bad spec waits for a new generation; source and API errors end the session, are
reported (Warning Event per new reason, SourceReady=False) and retried with backoff; a
`Restart` (source changed, baseline unrestorable) starts a new session at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubetrain_contract.s3 import S3Connection

from kubetrain_operator import detection, metrics
from kubetrain_operator.context import Restart, WatchContext
from kubetrain_operator.detection import Detection
from kubetrain_operator.kube import Kube, KubeError
from kubetrain_operator.objectstore import ObjectStore, SourceError
from kubetrain_operator.runs import Runs
from kubetrain_operator.runtime import Runtime
from kubetrain_operator.settings import OperatorSettings
from kubetrain_operator.spec import SpecError, WatchSpec, parse_watch
from kubetrain_operator.status import Conditions, Durable, parse_time
from kubetrain_operator.statusview import (
    StatusInput,
    build_status,
    invalid_spec_status,
    phase,
    shown_labels,
)

#: Secret -> object store of a watch (`detection.open_source`; unit tests pass a fake).
SourceOpener = Callable[[Kube, WatchSpec, OperatorSettings], tuple[ObjectStore, S3Connection]]


class WatchWorker:
    def __init__(
        self,
        rt: Runtime,
        *,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        stopped: Any,
        open_source: SourceOpener = detection.open_source,
    ) -> None:
        self.ctx = WatchContext(rt, namespace=namespace, name=name, body=body, stopped=stopped)
        self.ctx.persist = lambda: self.patch_status(force=True)
        self.s = rt.settings
        self.open_source = open_source
        self.last_warning_reason = ""
        self._begin_session()

    def _begin_session(self) -> None:
        self.ctx.reset()
        self.detection: Detection | None = None
        self.runs: Runs | None = None
        self.conditions = Conditions()
        self.prev_labels: dict[str, Any] = {}
        self.last_patch = 0.0
        self.status_failures = 0

    # -- top level ----------------------------------------------------------------------
    def run(self) -> None:
        ctx = self.ctx
        backoff = 1.0
        ctx.rt.report(ctx.key, "Starting")
        try:
            while not ctx.stopped:
                started = time.time()
                try:
                    self.start_session()
                    self._loop()
                except Restart as exc:
                    ctx.log.info("session restart: %s", exc)
                except SpecError as exc:
                    self._report_invalid_spec(str(exc))
                    self._wait_for_new_generation()
                except (SourceError, KubeError) as exc:
                    if ctx.stopped:
                        break
                    if isinstance(exc, SourceError):
                        self._report_source_down(exc.reason, exc.message)
                    else:
                        self._report_source_down("KubernetesAPIError", str(exc))
                    if time.time() - started > 60:
                        backoff = 1.0
                    ctx.wait(backoff)
                    backoff = min(backoff * 2, self.s.source_retry_max_seconds)
                except Exception:
                    if ctx.stopped:
                        break
                    ctx.log.exception("watch worker crashed; restarting the session")
                    ctx.wait(backoff)
                    backoff = min(backoff * 2, self.s.source_retry_max_seconds)
                finally:
                    self.stop_session()
        finally:
            ctx.rt.forget(ctx.key)
            reason = getattr(ctx.stopped, "reason", None)
            if reason is not None and "RESOURCE_DELETED" in str(reason):
                ctx.metrics.remove()

    def stop_session(self) -> None:
        """Notifications off (listener thread, webhook route); safe to call repeatedly."""
        if self.detection is not None:
            self.detection.stop()
        metrics.LISTEN_CONNECTED.labels(*self.ctx.labels()).set(0)

    def start_session(self) -> None:
        """Everything up to the first loop turn; raises what `run` reports and retries."""
        ctx = self.ctx
        self._begin_session()
        obj = ctx.kube.get_watch(ctx.namespace, ctx.name)
        status = obj.get("status") or {}
        ctx.durable = Durable.from_status(status)
        self.conditions = Conditions.from_status(status.get("conditions"))
        self.prev_labels = dict(status.get("labels") or {})
        ctx.source.last_event_time = parse_time(status.get("lastEventTime"))
        serving = status.get("serving")
        ctx.serving = dict(serving) if isinstance(serving, Mapping) else None
        ctx.spec = spec = parse_watch(obj)

        store, conn = self.open_source(ctx.kube, spec, self.s)
        store.check_bucket()
        self.detection = det = Detection(ctx, store, conn)
        det.start(ctx.durable.baseline)
        self.runs = runs = Runs(ctx, det)
        runs.adopt_jobs()
        baseline = ctx.durable.baseline
        ctx.event(
            "Normal",
            "WatchReady",
            f"watching s3://{spec.source.bucket}/{spec.source.prefix} ({det.tally.live_objects()} objects, "
            f"baseline {baseline.digest if baseline else 'none'}, "
            f"notifications {spec.detection.notifications})",
        )
        self.last_warning_reason = ""
        self.patch_status(force=True)

    def _loop(self) -> None:
        while not self.ctx.stopped:
            self.tick(time.time())
            self.ctx.wait(self.s.tick_seconds)

    def tick(self, now: float) -> None:
        """One turn of the loop (after `start_session`)."""
        ctx, det, runs = self.ctx, self.detection, self.runs
        assert det is not None and runs is not None, "start_session first"
        ctx.rt.report(ctx.key, self.phase())
        self._check_spec()
        det.tick(now)
        runs.tick(now)
        try:
            self.patch_status()
            self.status_failures = 0
        except KubeError as exc:
            self.status_failures += 1
            ctx.log.warning("status patch failed (%d in a row): %s", self.status_failures, exc)
            if exc.not_found or self.status_failures >= 30:
                raise

    def _check_spec(self) -> None:
        ctx = self.ctx
        spec = ctx.watch
        meta = ctx.body.get("metadata") or {}
        if meta.get("generation") == spec.generation:
            return
        new = parse_watch(ctx.body)
        if new.source_fingerprint() != spec.source_fingerprint():
            ctx.log.info("source changed (generation %s): restarting the session", new.generation)
            raise Restart("spec.source changed")
        if new.detection.resync_interval != spec.detection.resync_interval and self.detection:
            self.detection.reschedule(new.detection.resync_interval)
        ctx.spec = new
        ctx.dirty = True

    # -- reports outside the loop -------------------------------------------------------
    def _report_invalid_spec(self, message: str) -> None:
        ctx = self.ctx
        ctx.log.warning("invalid spec: %s", message)
        gen = int((ctx.body.get("metadata") or {}).get("generation") or 0)
        patch, self.conditions = invalid_spec_status(
            self.conditions, message, generation=gen, now=time.time()
        )
        try:
            ctx.kube.patch_watch_status(ctx.namespace, ctx.name, patch)
        except KubeError as exc:
            ctx.log.warning("status patch failed: %s", exc)
        ctx.event("Warning", "InvalidSpec", message)

    def _wait_for_new_generation(self) -> None:
        gen = (self.ctx.body.get("metadata") or {}).get("generation")
        while not self.ctx.wait(1.0):
            if (self.ctx.body.get("metadata") or {}).get("generation") != gen:
                return

    def _report_source_down(self, reason: str, message: str) -> None:
        ctx = self.ctx
        ctx.source.ready = False
        ctx.source.reason, ctx.source.message = reason, message
        ctx.log.warning("source not ready (%s): %s", reason, message)
        if reason != self.last_warning_reason:
            self.last_warning_reason = reason
            ctx.event("Warning", reason, message)
        if ctx.spec is not None:
            try:
                self.patch_status(force=True)
            except KubeError as exc:
                ctx.log.warning("status patch failed: %s", exc)

    # -- status -------------------------------------------------------------------------
    def phase(self) -> str:
        return phase(self.ctx.spec, self.ctx.durable, self.ctx.source.ready)

    def patch_status(self, *, force: bool = False) -> None:
        ctx = self.ctx
        now = time.time()
        if not force and (not ctx.dirty or now - self.last_patch < self.s.status_interval_seconds):
            return
        counts = self.detection.counts() if self.detection is not None else {}
        ctx.metrics.set_labels((label, c.changes, c.objects) for label, c in counts.items())
        status, self.conditions = build_status(
            StatusInput(
                now=now,
                spec=ctx.watch,
                durable=ctx.durable,
                source=ctx.source,
                counts=counts,
                previous_labels=self.prev_labels,
                max_labels=self.s.max_status_labels,
                decision=ctx.decision,
                serving=ctx.serving,
            ),
            self.conditions,
        )
        ctx.kube.patch_watch_status(ctx.namespace, ctx.name, status)
        self.prev_labels = shown_labels(status)
        self.last_patch = now
        ctx.dirty = False


def run_watch(
    rt: Runtime, *, namespace: str, name: str, body: Mapping[str, Any], stopped: Any
) -> None:
    """Entry point for the kopf daemon."""
    WatchWorker(rt, namespace=namespace, name=name, body=body, stopped=stopped).run()
