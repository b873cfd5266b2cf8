"""The per-watch worker: one loop that owns a watch's tally, trigger and run lifecycle.

It runs as a kopf *sync daemon* (one thread per DatasetWatch) and does the I/O that the pure
modules decide about:

    session start: fresh GET of the watch (status = durable state), Secret -> MinIO client,
      listen stream up, baseline manifest from the bucket, full listing, Job adoption
    loop (every tick): drain notifications into the tally -> resync when due or after a
      reconnect -> poll the active Job, or evaluate the trigger -> patch status (throttled)

Durability (no local disk): every state transition that matters is written to the watch's
status *before* the side effect it guards, and each side effect is idempotent:
    launch = write manifest (content-addressed) -> status.activeRun + runCounter -> create
             Job `<watch>-train-<n>` (409: adopt if ours) -> activeRun.jobCreated=true
    finish = read result -> status: baseline := run's manifest, lastRun, activeRun := null
             -> (promoted) rollout hook -> lastRun.rolloutPending=false
A crash between any two steps is resumed by the next session from the status (and from the
Jobs found by name + labels), never losing a run and never creating a second Job.

kopf applies a daemon's `patch` only when the daemon returns; this loop never returns while
the watch exists, so it patches status directly through the API (`Kube.patch_watch_status`).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import kubetrain_contract as contract

from kubetrain_operator import hooks, jobspec, memory, metrics
from kubetrain_operator.decisions.trigger import Action, Decision, TriggerInput, decide
from kubetrain_operator.kube import KubeError, selector
from kubetrain_operator.objectstore import (
    Listener,
    ListenerItem,
    ObjectStore,
    SourceError,
    StreamState,
    connection_from_secret,
    wait_connected,
)
from kubetrain_operator.outcome import JOB_NAME_LABEL, RunOutcome, RunState, interpret
from kubetrain_operator.runtime import Runtime
from kubetrain_operator.spec import API_VERSION, KIND, SpecError, WatchSpec, parse_watch
from kubetrain_operator.status import (
    COND_READY,
    COND_SOURCE_READY,
    COND_TRAINING,
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    ActiveRun,
    Baseline,
    Conditions,
    Durable,
    LastRun,
    compute_phase,
    iso,
    labels_patch,
    parse_time,
    pending_summary,
)
from kubetrain_operator.tally import ListingOrderError, Tally
from kubetrain_operator.webhook import Route

log = logging.getLogger("kubetrain.operator.worker")


class _Prefixed(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{(self.extra or {}).get('watch')}] {msg}", kwargs


class Restart(Exception):
    """Leave the session and start a new one (source changed, baseline unreadable...)."""


class WatchWorker:
    def __init__(
        self, rt: Runtime, *, namespace: str, name: str, body: Mapping[str, Any], stopped: Any
    ) -> None:
        self.rt = rt
        self.s = rt.settings
        self.kube = rt.kube
        self.namespace = namespace
        self.name = name
        self.key = f"{namespace}/{name}"
        self.body = body  # kopf's live view: spec edits show up here without a restart
        self.stopped = stopped
        self.metrics = metrics.WatchMetrics(namespace, name)
        self.log = _Prefixed(log, {"watch": self.key})
        self.last_warning_reason = ""
        self._reset()

    def _reset(self) -> None:
        self.spec: WatchSpec | None = None
        self.durable = Durable()
        self.conditions = Conditions()
        self.prev_labels: dict[str, Any] = {}
        self.store: ObjectStore | None = None
        self.tally: Tally | None = None
        self.listener: Listener | None = None
        self.queue: queue.SimpleQueue[ListenerItem] = queue.SimpleQueue()
        self.source_ready = False
        self.source_reason = ("Starting", "connecting to the bucket")
        self.notify_ok = False
        self.notify_message = "notifications not set up yet"
        self.route: Route | None = None
        self.probe_ok = True
        self.settle_resync_at: float | None = None
        self.next_probe = 0.0
        self.connects_covered = 0
        self.resync_due = False
        self.next_resync = 0.0
        self.resync_backoff = 1.0
        self.listed_once = False
        self.last_event_time: float | None = None
        self.last_change_time: float | None = None
        self.last_resync_time: float | None = None
        self.last_resync_seconds = 0.0
        self.decision: Decision | None = None
        self.crossing_announced = False
        self.next_job_poll = 0.0
        self.next_rollout_try = 0.0
        self.next_rollout_check = 0.0
        self.last_rollout_error = ""
        self.serving: dict[str, Any] | None = None
        self.dirty = True
        self.last_patch = 0.0
        self.status_failures = 0

    # -- helpers ------------------------------------------------------------------------
    def _ref(self) -> dict[str, Any]:
        uid = (
            self.spec.uid if self.spec else str((self.body.get("metadata") or {}).get("uid") or "")
        )
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": uid},
        }

    def _event(self, type_: str, reason: str, message: str) -> None:
        self.log.info("%s: %s", reason, message)
        self.rt.emit(self._ref(), type_, reason, message)

    def _wait(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the daemon must stop."""
        self.stopped.wait(seconds)
        return bool(self.stopped)

    # -- top level ----------------------------------------------------------------------
    def run(self) -> None:
        backoff = 1.0
        self.rt.report(self.key, "Starting")
        try:
            while not self.stopped:
                started = time.time()
                try:
                    self._session()
                except Restart as exc:
                    self.log.info("session restart: %s", exc)
                except SpecError as exc:
                    self._report_invalid_spec(str(exc))
                    self._wait_for_new_generation()
                except (SourceError, KubeError) as exc:
                    if self.stopped:
                        break
                    if isinstance(exc, SourceError):
                        self._report_source_down(exc.reason, exc.message)
                    else:
                        self._report_source_down("KubernetesAPIError", str(exc))
                    if time.time() - started > 60:
                        backoff = 1.0
                    self._wait(backoff)
                    backoff = min(backoff * 2, self.s.source_retry_max_seconds)
                except Exception:
                    if self.stopped:
                        break
                    self.log.exception("watch worker crashed; restarting the session")
                    self._wait(backoff)
                    backoff = min(backoff * 2, self.s.source_retry_max_seconds)
                finally:
                    self._stop_listener()
        finally:
            self.rt.forget(self.key)
            reason = getattr(self.stopped, "reason", None)
            if reason is not None and "RESOURCE_DELETED" in str(reason):
                self.metrics.remove()

    def _stop_listener(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        if self.route is not None and self.rt.webhook is not None:
            self.rt.webhook.unregister(self.route)
            self.route = None
        metrics.LISTEN_CONNECTED.labels(self.namespace, self.name).set(0)

    def _setup_webhook(self) -> None:
        """Receive this bucket's events from the operator's webhook receiver."""
        assert self.spec is not None
        if self.rt.webhook is None:
            self.notify_ok = False
            self.notify_message = (
                "the operator's webhook receiver is disabled (--webhook-port 0); resync only"
            )
            return
        self.route = self.rt.webhook.register(
            self.spec.source.bucket, self.spec.source.prefix, self.queue
        )
        self._ensure_subscription()

    def _ensure_subscription(self) -> None:
        """Subscribe the bucket to the operator's MinIO webhook target (idempotent)."""
        assert self.store is not None
        try:
            changed = self.store.ensure_webhook(self.s.webhook_arn)
        except SourceError as exc:
            if self.notify_message != exc.message:
                self._event(
                    "Warning", exc.reason, exc.message + "; changes are found by resync only"
                )
            self.notify_ok = False
            self.notify_message = exc.message
            self.dirty = True
            return
        if changed:
            self.log.info("bucket subscribed to %s", self.s.webhook_arn)
        self.notify_ok = True
        self.notify_message = "webhook subscription in place"
        metrics.LISTEN_CONNECTED.labels(self.namespace, self.name).set(1)
        self.dirty = True

    def _probe(self, now: float) -> None:
        """Webhook mode: an endpoint outage may lose events; re-list once it is back."""
        assert self.store is not None
        if now < self.next_probe:
            return
        self.next_probe = now + self.s.source_probe_seconds
        try:
            self.store.check_bucket()
        except SourceError as exc:
            if self.probe_ok:
                self.probe_ok = False
                self.notify_ok = False
                self.notify_message = f"{exc.message}; will re-list when it is back"
                metrics.LISTEN_CONNECTED.labels(self.namespace, self.name).set(0)
                metrics.LISTEN_RECONNECTS.labels(self.namespace, self.name).inc()
                self.dirty = True
                self.log.warning("source probe failed: %s", exc.message)
            return
        if not self.probe_ok:
            self.probe_ok = True
            self.log.info("source is back: re-listing (events of the outage may be lost)")
            self.resync_due = True
            self.settle_resync_at = now + self.s.source_settle_seconds
            self._ensure_subscription()
        elif self.settle_resync_at is not None and now >= self.settle_resync_at:
            # Writes made while MinIO was still bringing its webhook target online were
            # neither notified nor, if they came after the first re-listing, listed.
            self.settle_resync_at = None
            self.log.info("re-listing once more now that notifications have had time to settle")
            self.resync_due = True

    def _report_invalid_spec(self, message: str) -> None:
        self.log.warning("invalid spec: %s", message)
        now = iso(time.time()) or ""
        gen = int((self.body.get("metadata") or {}).get("generation") or 0)
        self.conditions.set(COND_READY, False, "InvalidSpec", message, now=now, generation=gen)
        try:
            self.kube.patch_watch_status(
                self.namespace,
                self.name,
                {
                    "phase": "Pending",
                    "observedGeneration": gen,
                    "conditions": self.conditions.to_status(),
                },
            )
        except KubeError as exc:
            self.log.warning("status patch failed: %s", exc)
        self._event("Warning", "InvalidSpec", message)

    def _wait_for_new_generation(self) -> None:
        gen = (self.body.get("metadata") or {}).get("generation")
        while not self._wait(1.0):
            if (self.body.get("metadata") or {}).get("generation") != gen:
                return

    def _report_source_down(self, reason: str, message: str) -> None:
        self.source_ready = False
        self.source_reason = (reason, message)
        self.log.warning("source not ready (%s): %s", reason, message)
        if reason != self.last_warning_reason:
            self.last_warning_reason = reason
            self._event("Warning", reason, message)
        if self.spec is not None:
            try:
                self._patch_status(force=True)
            except KubeError as exc:
                self.log.warning("status patch failed: %s", exc)

    # -- session ------------------------------------------------------------------------
    def _session(self) -> None:
        previous_reason = self.source_reason
        self._reset()
        self.source_reason = previous_reason
        obj = self.kube.get_watch(self.namespace, self.name)
        status = obj.get("status") or {}
        self.durable = Durable.from_status(status)
        self.conditions = Conditions.from_status(status.get("conditions"))
        self.prev_labels = dict(status.get("labels") or {})
        self.last_event_time = parse_time(status.get("lastEventTime"))
        serving = status.get("serving")
        self.serving = dict(serving) if isinstance(serving, Mapping) else None
        self.spec = spec = parse_watch(obj)

        try:
            secret = self.kube.get_secret(self.namespace, spec.source.credentials_secret)
        except KubeError as exc:
            reason = "CredentialsNotFound" if exc.not_found else "CredentialsUnreadable"
            raise SourceError(reason, f"Secret {spec.source.credentials_secret!r}: {exc}") from exc
        creds = connection_from_secret(spec.source, secret)
        self.store = store = ObjectStore(spec.source, creds, timeout=self.s.s3_timeout_seconds)
        store.check_bucket()

        self.tally = Tally(spec.source.prefix, spec.source.include)
        if self.durable.baseline is not None:
            self._load_baseline(self.durable.baseline)

        if spec.detection.notifications == "Listen":
            self.listener = Listener(
                spec.source,
                creds,
                self.queue,
                ping_seconds=self.s.listen_ping_seconds,
                read_timeout=self.s.listen_read_timeout_seconds,
                backoff_max=self.s.listen_backoff_max_seconds,
                name=self.key,
            )
            self.listener.start()
            if not wait_connected(self.listener, 5.0):
                self.log.warning("listen stream not connected yet; relying on resync until it is")
                self.notify_message = "listen stream not connected yet"
        elif spec.detection.notifications == "Webhook":
            self._setup_webhook()

        self._resync()
        if not self.source_ready:
            raise SourceError(*self.source_reason)
        self._adopt_jobs()
        self._event(
            "Normal",
            "WatchReady",
            f"watching s3://{spec.source.bucket}/{spec.source.prefix} ({self.tally.live_objects()} objects, "
            f"baseline {self.durable.baseline.digest if self.durable.baseline else 'none'}, "
            f"notifications {spec.detection.notifications})",
        )
        self.last_warning_reason = ""
        self._patch_status(force=True)
        self._loop()

    def _load_baseline(self, baseline: Baseline) -> None:
        assert self.store is not None and self.tally is not None
        try:
            manifest = self.store.read_manifest(baseline.manifest_key)
        except SourceError as exc:
            if exc.reason != "ManifestMissing":
                raise
            # Deleted from the bucket by someone: every live object now counts as a change.
            self._event(
                "Warning", "BaselineLost", f"{exc.message}; counting against an empty baseline"
            )
            return
        self.tally.set_baseline(manifest.objects)
        del manifest
        memory.release()

    def _loop(self) -> None:
        assert self.spec is not None
        while not self.stopped:
            now = time.time()
            self.rt.report(self.key, self._phase())
            self._check_spec()
            self._drain(now)
            if self.spec.detection.notifications == "Webhook" and self.route is not None:
                self._probe(now)
            if self.resync_due or now >= self.next_resync:
                self._resync()
                if self.route is not None and not self.notify_ok and self.probe_ok:
                    self._ensure_subscription()
            if self.durable.active_run is not None:
                if now >= self.next_job_poll:
                    self.next_job_poll = now + self.s.job_poll_seconds
                    self._poll_run()
            else:
                self._evaluate(now)
            self._maybe_rollout(now)
            try:
                self._patch_status()
                self.status_failures = 0
            except KubeError as exc:
                self.status_failures += 1
                self.log.warning("status patch failed (%d in a row): %s", self.status_failures, exc)
                if exc.not_found or self.status_failures >= 30:
                    raise
            self._wait(self.s.tick_seconds)

    def _check_spec(self) -> None:
        assert self.spec is not None
        meta = self.body.get("metadata") or {}
        if meta.get("generation") == self.spec.generation:
            return
        new = parse_watch(self.body)
        if new.source_fingerprint() != self.spec.source_fingerprint():
            self.log.info("source changed (generation %s): restarting the session", new.generation)
            raise Restart("spec.source changed")
        if new.detection.resync_interval != self.spec.detection.resync_interval:
            self.next_resync = min(self.next_resync, time.time() + new.detection.resync_interval)
        self.spec = new
        self.dirty = True

    # -- detection ----------------------------------------------------------------------
    def _drain(self, now: float) -> None:
        assert self.tally is not None
        received = changed = 0
        for _ in range(self.s.drain_limit):  # a flood must not starve status and Job polling
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, StreamState):
                self._stream_state(item)
                continue
            received += 1
            if item.kind == "put":
                hit = self.tally.put(item.key, item.etag)
            elif item.kind == "delete":
                hit = self.tally.delete(item.key)
            else:
                hit = self._refresh_key(item.key)
            changed += hit
        if received:
            metrics.NOTIFICATIONS.labels(self.namespace, self.name).inc(received)
            self.last_event_time = now
            self.dirty = True
        if changed:
            self.last_change_time = now

    def _refresh_key(self, key: str) -> bool:
        assert self.store is not None and self.tally is not None
        try:
            etag = self.store.stat_etag(key)
        except SourceError as exc:
            self.log.warning("%s; scheduling a resync", exc.message)
            self.resync_due = True
            return False
        return self.tally.put(key, etag) if etag is not None else self.tally.delete(key)

    def _stream_state(self, state: StreamState) -> None:
        gauge = metrics.LISTEN_CONNECTED.labels(self.namespace, self.name)
        self.dirty = True
        if state.connected:
            self.notify_ok = True
            self.notify_message = "listen stream connected"
            gauge.set(1)
            if self.listener is not None and self.listener.connects > self.connects_covered:
                # Events published while nobody listened are lost: re-list now.
                self.resync_due = True
        else:
            self.notify_ok = False
            self.notify_message = (
                f"listen stream disconnected ({state.error or 'closed'}); resync covers the gap"
            )
            gauge.set(0)
            metrics.LISTEN_RECONNECTS.labels(self.namespace, self.name).inc()

    def _resync(self) -> None:
        """Full listing into the tally; on failure mark the source not ready and back off."""
        assert self.spec is not None and self.store is not None and self.tally is not None
        started = time.time()
        self.resync_due = False
        if self.listener is not None:
            self.connects_covered = self.listener.connects
        try:
            try:
                result = self._list_into_tally(streaming=True)
            except ListingOrderError as exc:
                self.log.warning("%s; repeating the listing without streaming sweeps", exc)
                result = self._list_into_tally(streaming=False)
        except SourceError as exc:
            was_ready = self.source_ready
            self.source_ready = False
            self.source_reason = (exc.reason, exc.message)
            self.next_resync = time.time() + self.resync_backoff
            self.resync_backoff = min(self.resync_backoff * 2, self.s.source_retry_max_seconds)
            self.dirty = True
            if was_ready:
                self._event("Warning", exc.reason, exc.message)
            self.log.warning("resync failed: %s", exc.message)
            return
        if result.listed >= 10_000:
            memory.release()
        elapsed = time.time() - started
        self.last_resync_time = time.time()
        self.last_resync_seconds = elapsed
        self.next_resync = self.last_resync_time + self.spec.detection.resync_interval
        self.resync_backoff = 1.0
        key = (self.namespace, self.name)
        metrics.RESYNC_SECONDS.labels(*key).observe(elapsed)
        metrics.RESYNC_OBJECTS.labels(*key).set(result.listed)
        if result.changed:
            self.last_change_time = self.last_resync_time
            if self.listed_once:  # the first listing of a session is not a repair
                metrics.RESYNC_CORRECTIONS.labels(*key).inc(result.changed)
                self.log.info("resync corrected %d keys that notifications missed", result.changed)
        self.listed_once = True
        if not self.source_ready:
            self.source_ready = True
            self.source_reason = ("Listed", "bucket listed")
        self.dirty = True
        self.log.info(
            "resync: %d objects listed, %d corrected, %.2fs", result.listed, result.changed, elapsed
        )

    def _list_into_tally(self, *, streaming: bool) -> Any:
        assert self.store is not None and self.tally is not None
        session = self.tally.resync(streaming=streaming)
        feed = session.feed
        for i, (key, etag) in enumerate(self.store.iter_listing()):
            feed(key, etag)
            if i % 20000 == 19999:
                self.rt.report(self.key, "Resyncing")
                if self.stopped:
                    raise Restart("stopping during a resync")
        return session.finish()

    # -- trigger and launch -------------------------------------------------------------
    def _evaluate(self, now: float) -> None:
        assert self.spec is not None and self.tally is not None
        spec, d = self.spec, self.durable
        last = d.last_run
        inp = TriggerInput(
            now=now,
            threshold=spec.trigger.threshold,
            debounce=spec.trigger.debounce,
            cooldown=spec.trigger.cooldown,
            max_delay=spec.trigger.max_delay,
            initial_training=spec.trigger.initial_training,
            suspended=spec.suspend,
            active_run=d.active_run is not None,
            source_ready=self.source_ready,
            has_baseline=d.baseline is not None,
            live_objects=self.tally.live_objects(),
            changes=self.tally.changes(),
            last_change_time=self.last_change_time,
            crossed_at=parse_time(d.crossed_at),
            last_finish_time=parse_time(last.finish_time) if last else None,
            last_run_failed=bool(last and last.failed),
            spec_changed_since_last_run=bool(last and last.generation != spec.generation),
        )
        decision = decide(inp)
        if self.decision is None or decision.reason != self.decision.reason:
            self.dirty = True
        self.decision = decision
        if decision.crossed and d.crossed_at is None:
            self.durable = d = d.with_(crossed_at=iso(now, millis=True))
            self.dirty = True
        if not decision.crossed:
            if d.crossed_at is not None:
                self.durable = d.with_(crossed_at=None)
                self.dirty = True
            self.crossing_announced = False
        elif not self.crossing_announced:
            self.crossing_announced = True
            self._event("Normal", "ThresholdCrossed", decision.trigger_reason)
        if decision.action is Action.LAUNCH:
            self._launch(decision, now)

    def _launch(self, decision: Decision, now: float) -> None:
        assert self.spec is not None and self.store is not None and self.tally is not None
        spec = self.spec
        manifest = contract.SnapshotManifest(
            watch=spec.watch_id,
            bucket=spec.source.bucket,
            prefix=spec.source.prefix,
            objects=self.tally.live_snapshot(),
            created_at=iso(now) or "",
        )
        digest = manifest.digest
        key = contract.manifest_key(spec.snapshot_dir, digest)
        try:
            self.store.put_manifest(key, manifest)
        except SourceError as exc:
            self.log.warning("cannot launch yet: %s", exc.message)
            return
        self.rt.fault("manifest")

        run = self.durable.run_counter + 1
        active = ActiveRun(
            job_name=jobspec.job_name(spec.name, run),
            run=run,
            start_time=iso(now) or "",
            trigger_reason=decision.trigger_reason,
            manifest_key=key,
            dataset_digest=digest,
            generation=spec.generation,
            job_created=False,
        )
        before = self.durable
        crossed_at = parse_time(before.crossed_at)
        self.durable = before.with_(run_counter=run, active_run=active)
        if not self._write_durable():
            self.durable = before  # nothing was created; the next tick tries again
            return
        self.rt.fault("status")
        if not self._ensure_job(active):
            return
        metrics.RUNS_STARTED.labels(self.namespace, self.name).inc()
        if crossed_at is not None:
            metrics.TRIGGER_TO_JOB.labels(self.namespace, self.name).observe(
                max(0.0, time.time() - crossed_at)
            )
        self._event(
            "Normal",
            "JobLaunched",
            f"Job {active.job_name} trains on {len(manifest.objects)} objects "
            f"(snapshot {digest[:19]}): {decision.trigger_reason}",
        )
        self.next_job_poll = time.time() + self.s.job_poll_seconds
        self.crossing_announced = False

    def _owned(self, job: Mapping[str, Any]) -> bool:
        assert self.spec is not None
        meta = job.get("metadata") or {}
        if (meta.get("labels") or {}).get(jobspec.LABEL_WATCH) != self.name:
            return False
        return any(ref.get("uid") == self.spec.uid for ref in meta.get("ownerReferences") or [])

    def _ensure_job(self, active: ActiveRun) -> bool:
        """Create the run's Job or adopt the existing one; True when it exists and is ours."""
        assert self.spec is not None
        job = jobspec.build_job(
            self.spec,
            run=active.run,
            manifest_key=active.manifest_key,
            dataset_digest=active.dataset_digest,
            trigger_reason=active.trigger_reason,
            default_image=self.s.default_image,
            default_mlflow_uri=self.s.default_mlflow_uri,
            trainer_uid=self.s.trainer_uid,
        )
        try:
            self.kube.create_job(self.namespace, job)
        except KubeError as exc:
            if not exc.conflict:
                self.log.warning("creating Job %s failed (will retry): %s", active.job_name, exc)
                return False
            existing = self.kube.get_job(self.namespace, active.job_name)
            if existing is None:
                return False  # deleted in between; retry next tick
            if not self._owned(existing):
                self._event(
                    "Warning",
                    "JobNameTaken",
                    f"a Job named {active.job_name} exists and does not belong to this watch; skipping run {active.run}",
                )
                self.durable = self.durable.with_(active_run=None)
                self._write_durable()
                return False
            self.log.info("Job %s already exists: adopted", active.job_name)
        self.rt.fault("job")  # crash tests: the Job exists, the status does not say so yet
        self.durable = self.durable.with_(active_run=replace(active, job_created=True))
        self._write_durable()
        return True

    def _adopt_jobs(self) -> None:
        """Reconcile status with the watch's Jobs (by labels + owner): counter, active run."""
        assert self.spec is not None
        jobs = [
            j
            for j in self.kube.list_jobs(
                self.namespace, selector(jobspec.selector_labels(self.name))
            )
            if self._owned(j)
        ]
        numbered = {}
        for job in jobs:
            n = jobspec.run_number(str(job["metadata"]["name"]), self.name)
            if n is not None:
                numbered[n] = job
        if not numbered:
            return
        newest = max(numbered)
        d = self.durable
        changed = False
        if newest > d.run_counter:
            d = d.with_(run_counter=newest)
            changed = True
        last_run = d.last_run.run if d.last_run else 0
        if d.active_run is None and newest > last_run:
            job = numbered[newest]
            ann = job["metadata"].get("annotations") or {}
            d = d.with_(
                active_run=ActiveRun(
                    job_name=job["metadata"]["name"],
                    run=newest,
                    start_time=str(job["metadata"].get("creationTimestamp") or ""),
                    trigger_reason=str(ann.get(jobspec.ANN_REASON) or ""),
                    manifest_key=str(ann.get(jobspec.ANN_MANIFEST_KEY) or ""),
                    dataset_digest=str(ann.get(jobspec.ANN_DIGEST) or ""),
                    generation=int(ann.get(jobspec.ANN_GENERATION) or 0),
                    job_created=True,
                )
            )
            changed = True
        if changed:
            self.durable = d
            self._write_durable(raise_errors=True)
            self._event(
                "Normal",
                "JobAdopted",
                f"adopted Job {numbered[newest]['metadata']['name']} found by its labels",
            )

    # -- run completion -----------------------------------------------------------------
    def _poll_run(self) -> None:
        active = self.durable.active_run
        assert active is not None
        try:
            job = self.kube.get_job(self.namespace, active.job_name)
        except KubeError as exc:
            self.log.warning("reading Job %s: %s", active.job_name, exc)
            return
        if job is None:
            if not active.job_created:
                self._ensure_job(active)  # the crash window between status write and creation
                return
            outcome = RunOutcome(
                RunState.FAILED,
                "JobDeleted",
                f"Job {active.job_name} was deleted before it finished",
            )
        elif not self._owned(job):
            outcome = RunOutcome(
                RunState.FAILED,
                "JobNotOwned",
                f"Job {active.job_name} does not belong to this watch",
            )
        else:
            if not active.job_created:
                self.durable = self.durable.with_(active_run=replace(active, job_created=True))
                self._write_durable()
                self._event("Normal", "JobAdopted", f"adopted existing Job {active.job_name}")
            outcome = interpret(job, [])
            if outcome.state is RunState.RUNNING:
                return
            try:
                pods = self.kube.list_pods(self.namespace, f"{JOB_NAME_LABEL}={active.job_name}")
            except KubeError as exc:
                self.log.warning("listing pods of %s: %s", active.job_name, exc)
                return
            outcome = interpret(job, pods)
        self._finish(active, outcome)

    def _finish(self, active: ActiveRun, outcome: RunOutcome) -> None:
        assert self.store is not None and self.tally is not None
        now = time.time()
        result = outcome.result
        common = {
            "job_name": active.job_name,
            "run": active.run,
            "reason": outcome.reason,
            "message": outcome.message,
            "start_time": active.start_time,
            "finish_time": iso(now) or "",
            "dataset_digest": active.dataset_digest,
            "manifest_key": active.manifest_key,
            "generation": active.generation,
        }
        before = self.durable
        succeeded = False
        if outcome.state is RunState.SUCCEEDED and result is not None:
            try:
                manifest = self.store.read_manifest(active.manifest_key)
            except SourceError as exc:
                self.log.warning(
                    "run %s succeeded but its manifest is unreadable (retrying): %s",
                    active.job_name,
                    exc.message,
                )
                return
            succeeded = True
            last = LastRun(
                result=RESULT_SUCCEEDED,
                model_name=result.modelName,
                model_version=result.modelVersion,
                promoted=result.promoted,
                accuracy=result.accuracy,
                bento_uri=result.bentoUri,
                rollout_pending=result.promoted,
                **common,  # type: ignore[arg-type]
            )
            model = (
                f"{result.modelName}:{result.modelVersion}" if result.modelVersion else before.model
            )
            self.durable = before.with_(
                baseline=Baseline(
                    active.manifest_key, manifest.digest, len(manifest.objects), iso(now) or ""
                ),
                active_run=None,
                last_run=last,
                crossed_at=None,
                model=model,
            )
            # Changes that arrived during the run are now measured against what was trained;
            # re-diffed before the write so that the status patch shows matching counts.
            self.tally.set_baseline(manifest.objects)
            del manifest
            memory.release()
        else:
            last = LastRun(
                result=RESULT_FAILED,
                model_name=result.modelName if result else "",
                model_version=result.modelVersion if result else "",
                **common,  # type: ignore[arg-type]
            )
            self.durable = before.with_(active_run=None, last_run=last, crossed_at=None)
        if not self._write_durable():
            self.durable = before
            if succeeded:
                self._restore_baseline(before.baseline)
            return
        if succeeded:
            metrics.RUNS_SUCCEEDED.labels(self.namespace, self.name).inc()
            self._event("Normal", "TrainingSucceeded", f"Job {active.job_name}: {outcome.message}")
        else:
            metrics.RUNS_FAILED.labels(self.namespace, self.name).inc()
            self._event("Warning", "TrainingFailed", f"Job {active.job_name}: {outcome.message}")
        self.crossing_announced = False
        self.dirty = True
        self._prune_jobs()

    def _restore_baseline(self, baseline: Baseline | None) -> None:
        """Undo an in-memory baseline switch whose status write failed."""
        assert self.tally is not None
        if baseline is None:
            self.tally.set_baseline({})
            return
        try:
            self._load_baseline(baseline)
        except SourceError as exc:
            raise Restart(f"cannot restore the previous baseline: {exc.message}") from exc

    def _prune_jobs(self) -> None:
        """Keep the newest `jobHistoryLimit` finished Jobs of this watch."""
        assert self.spec is not None
        limit = self.spec.training.job_history_limit
        try:
            jobs = [
                j
                for j in self.kube.list_jobs(
                    self.namespace, selector(jobspec.selector_labels(self.name))
                )
                if self._owned(j) and interpret(j, []).state is not RunState.RUNNING
            ]
            jobs.sort(
                key=lambda j: jobspec.run_number(j["metadata"]["name"], self.name) or 0,
                reverse=True,
            )
            for job in jobs[limit:]:
                self.kube.delete_job(self.namespace, job["metadata"]["name"])
        except KubeError as exc:
            self.log.warning("pruning old Jobs: %s", exc)

    def _maybe_rollout(self, now: float) -> None:
        """Promoted run -> rollout hook (at-least-once); then periodic rollout checks."""
        rollout = self.rt.rollout
        last = self.durable.last_run
        if last is not None and last.rollout_pending and now >= self.next_rollout_try:
            result = contract.TrainResult(
                status="succeeded",
                reason=last.message,
                modelName=last.model_name,
                modelVersion=last.model_version,
                promoted=True,
                accuracy=last.accuracy,
                bentoUri=last.bento_uri,
                datasetDigest=last.dataset_digest,
            )
            try:
                serving = rollout.promoted(self.kube.get_watch(self.namespace, self.name), result)
            except hooks.Permanent as exc:
                self._event(
                    "Warning", "RolloutFailed", f"{last.model_name}:{last.model_version}: {exc}"
                )
                serving = None
            except Exception as exc:  # transient (API/network): retried, training unaffected
                self.next_rollout_try = now + self.s.rollout.retry_seconds
                self._event(
                    "Warning", "RolloutRetrying", f"{last.model_name}:{last.model_version}: {exc}"
                )
                return
            if serving is not None:
                self.serving = serving
            self.durable = self.durable.with_(last_run=replace(last, rollout_pending=False))
            self._write_durable()
            self.next_rollout_check = now + self.s.rollout.check_seconds
            return
        if now < self.next_rollout_check or not rollout.enabled:
            return
        self.next_rollout_check = now + self.s.rollout.check_seconds
        try:
            serving = rollout.check(self.body)
        except hooks.Permanent as exc:
            if str(exc) != self.last_rollout_error:
                self.last_rollout_error = str(exc)
                self._event("Warning", "RolloutFailed", str(exc))
            return
        except Exception as exc:
            self.log.warning("rollout check failed (will retry): %s", exc)
            return
        self.last_rollout_error = ""
        if serving is not None and serving != self.serving:
            self.serving = serving
            self.dirty = True

    # -- status -------------------------------------------------------------------------
    def _write_durable(self, *, raise_errors: bool = False) -> bool:
        """Persist the durable state now (not throttled); False (or raise) on failure."""
        try:
            self._patch_status(force=True)
        except KubeError as exc:
            if raise_errors:
                raise
            self.log.warning("writing status failed: %s", exc)
            return False
        return True

    def _phase(self) -> str:
        last = self.durable.last_run
        return compute_phase(
            source_ready=self.source_ready,
            active=self.durable.active_run is not None,
            suspended=bool(self.spec and self.spec.suspend),
            last_failed=bool(last and last.failed),
        )

    def _patch_status(self, *, force: bool = False) -> None:
        now = time.time()
        if not force and (not self.dirty or now - self.last_patch < self.s.status_interval_seconds):
            return
        assert self.spec is not None
        spec, d = self.spec, self.durable
        ts = iso(now) or ""
        gen = spec.generation
        counts = self.tally.counts() if self.tally is not None else {}
        changes = {label: c.changes for label, c in counts.items() if c.changes}
        summary, top_label, _ = pending_summary(changes, spec.trigger.threshold)
        self.metrics.set_labels((label, c.changes, c.objects) for label, c in counts.items())

        reason, message = self.source_reason
        mode = spec.detection.notifications
        if self.source_ready and mode != "None" and not self.notify_ok:
            reason, message = "ResyncOnly", self.notify_message
        elif self.source_ready:
            reason = "Notified" if mode != "None" else "ResyncOnly"
            message = (
                f"{sum(c.objects for c in counts.values())} objects listed; notifications: {mode}"
            )
        self.conditions.set(
            COND_SOURCE_READY, self.source_ready, reason, message, now=ts, generation=gen
        )
        last = d.last_run
        if d.active_run is not None:
            self.conditions.set(
                COND_TRAINING,
                True,
                "JobRunning",
                f"Job {d.active_run.job_name}: {d.active_run.trigger_reason}",
                now=ts,
                generation=gen,
            )
        else:
            self.conditions.set(
                COND_TRAINING,
                False,
                last.reason if last else "Idle",
                last.message if last else "no run yet",
                now=ts,
                generation=gen,
            )
        phase = self._phase()
        if not self.source_ready:
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
            ready = (True, "Watching", self.decision.reason if self.decision else "watching")
        self.conditions.set(COND_READY, ready[0], ready[1], ready[2], now=ts, generation=gen)

        message_text = self.decision.reason if self.decision else ""
        if self.decision and self.decision.wake_at:
            message_text += f" (until {iso(self.decision.wake_at)})"
        status: dict[str, Any] = {
            **d.to_status(),
            "phase": phase,
            "observedGeneration": gen,
            "conditions": self.conditions.to_status(),
            "labels": labels_patch(counts, self.prev_labels, self.s.max_status_labels),
            "pendingChanges": sum(changes.values()),
            "pendingSummary": summary,
            "pendingLabel": top_label,
            "totalObjects": sum(c.objects for c in counts.values()),
            "lastEventTime": iso(self.last_event_time, millis=True),
            "lastResyncTime": iso(self.last_resync_time),
            "lastResyncSeconds": round(self.last_resync_seconds, 3),
            "notifications": (
                "Disabled"
                if spec.detection.notifications == "None"
                else ("Connected" if self.notify_ok else "Disconnected")
            ),
            "message": message_text,
        }
        if self.serving is not None:
            status["serving"] = self.serving
        self.kube.patch_watch_status(self.namespace, self.name, status)
        self.prev_labels = {k: v for k, v in status["labels"].items() if v is not None}
        self.last_patch = now
        self.dirty = False


def run_watch(
    rt: Runtime, *, namespace: str, name: str, body: Mapping[str, Any], stopped: Any
) -> None:
    """Entry point for the kopf daemon."""
    WatchWorker(rt, namespace=namespace, name=name, body=body, stopped=stopped).run()
