"""Detection for one watch session: listing/resync, source probe, notification intake -> tally.

Counts are a diff against the baseline (`tally.py`), so notifications only make them fast;
completeness comes from full listings. A listing runs at session start, every
`resyncInterval`, and whenever events may have been lost:
- Listen mode: after every (re)connect of the listen stream (MinIO's pub/sub keeps nothing);
- Webhook mode: the bucket is probed every `--source-probe-seconds`; when it is back after a
  failure, re-list at once and again `--source-settle-seconds` later (a restarted MinIO
  brings its webhook target online asynchronously and drops the events of writes made
  before that); the bucket subscription is re-ensured as well;
- a `refresh` notification whose key cannot be stat'ed.
A failed listing marks the source not ready (status, Warning Event once) and is retried with
exponential backoff; nothing here raises out of the loop except `Restart` (stopping).

`open_source` (Secret -> connection -> `ObjectStore`) is the session's only construction of
S3 clients besides the listener; the worker takes it as a parameter so unit tests can hand in
an in-memory store.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping
from typing import Any

from kubetrain_contract.s3 import S3Connection

from kubetrain_operator import memory, metrics
from kubetrain_operator.context import Restart, WatchContext
from kubetrain_operator.kube import Kube, KubeError
from kubetrain_operator.objectstore import (
    Listener,
    ListenerItem,
    ObjectStore,
    SourceError,
    StreamState,
    connection_from_secret,
    wait_connected,
)
from kubetrain_operator.settings import OperatorSettings
from kubetrain_operator.spec import WatchSpec
from kubetrain_operator.status import Baseline
from kubetrain_operator.statusview import SourceReport
from kubetrain_operator.tally import LabelCounts, ListingOrderError, Tally
from kubetrain_operator.webhook import Route


def open_source(
    kube: Kube, spec: WatchSpec, settings: OperatorSettings
) -> tuple[ObjectStore, S3Connection]:
    """The watch's object store and connection from its credentials Secret (SourceError)."""
    try:
        secret = kube.get_secret(spec.namespace, spec.source.credentials_secret)
    except KubeError as exc:
        reason = "CredentialsNotFound" if exc.not_found else "CredentialsUnreadable"
        raise SourceError(reason, f"Secret {spec.source.credentials_secret!r}: {exc}") from exc
    conn = connection_from_secret(spec.source, secret)
    return ObjectStore(spec.source, conn, timeout=settings.s3_timeout_seconds), conn


class Detection:
    """The live bucket state of one session: the tally and everything that keeps it exact."""

    def __init__(self, ctx: WatchContext, store: ObjectStore, conn: S3Connection) -> None:
        self.ctx = ctx
        self.s = ctx.settings
        self.store = store
        self.conn = conn
        spec = ctx.watch
        self.tally = Tally(spec.source.prefix, spec.source.include)
        self.queue: queue.SimpleQueue[ListenerItem] = queue.SimpleQueue()
        self.listener: Listener | None = None
        self.route: Route | None = None
        self.probe_ok = True
        self.settle_resync_at: float | None = None
        self.next_probe = 0.0
        self.connects_covered = 0
        self.resync_due = False
        self.next_resync = 0.0
        self.resync_backoff = 1.0
        self.listed_once = False
        self.last_change_time: float | None = None

    @property
    def src(self) -> SourceReport:
        return self.ctx.source

    def _gauge(self) -> Any:
        return metrics.LISTEN_CONNECTED.labels(*self.ctx.labels())

    # -- session start and end ----------------------------------------------------------
    def start(self, baseline: Baseline | None) -> None:
        """Baseline into the tally, notifications up, first listing (SourceError if it failed)."""
        spec = self.ctx.watch
        if baseline is not None:
            self.load_baseline(baseline)
        if spec.detection.notifications == "Listen":
            self.listener = Listener(
                spec.source,
                self.conn,
                self.queue,
                ping_seconds=self.s.listen_ping_seconds,
                read_timeout=self.s.listen_read_timeout_seconds,
                backoff_max=self.s.listen_backoff_max_seconds,
                name=self.ctx.key,
            )
            self.listener.start()
            if not wait_connected(self.listener, 5.0):
                self.ctx.log.warning(
                    "listen stream not connected yet; relying on resync until it is"
                )
                self.src.notify_message = "listen stream not connected yet"
        elif spec.detection.notifications == "Webhook":
            self._setup_webhook()
        self.resync()
        if not self.src.ready:
            raise SourceError(self.src.reason, self.src.message)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        webhook = self.ctx.rt.webhook
        if self.route is not None and webhook is not None:
            webhook.unregister(self.route)
            self.route = None

    def load_baseline(self, baseline: Baseline) -> None:
        """The baseline manifest into the tally; a deleted manifest means an empty baseline."""
        try:
            manifest = self.store.read_manifest(baseline.manifest_key)
        except SourceError as exc:
            if exc.reason != "ManifestMissing":
                raise
            # Deleted from the bucket by someone: every live object now counts as a change.
            self.ctx.event(
                "Warning", "BaselineLost", f"{exc.message}; counting against an empty baseline"
            )
            return
        self.tally.set_baseline(manifest.objects)
        del manifest
        memory.release()

    def reschedule(self, resync_interval: float) -> None:
        """spec.detection.resyncInterval changed: the next listing is due no later than that."""
        self.next_resync = min(self.next_resync, time.time() + resync_interval)

    # -- every tick ---------------------------------------------------------------------
    def tick(self, now: float) -> None:
        self.drain(now)
        if self.ctx.watch.detection.notifications == "Webhook" and self.route is not None:
            self.probe(now)
        if self.resync_due or now >= self.next_resync:
            self.resync()
            if self.route is not None and not self.src.notify_ok and self.probe_ok:
                self.ensure_subscription()

    def drain(self, now: float) -> None:
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
            metrics.NOTIFICATIONS.labels(*self.ctx.labels()).inc(received)
            self.src.last_event_time = now
            self.ctx.dirty = True
        if changed:
            self.last_change_time = now

    def _refresh_key(self, key: str) -> bool:
        try:
            etag = self.store.stat_etag(key)
        except SourceError as exc:
            self.ctx.log.warning("%s; scheduling a resync", exc.message)
            self.resync_due = True
            return False
        return self.tally.put(key, etag) if etag is not None else self.tally.delete(key)

    def _stream_state(self, state: StreamState) -> None:
        gauge = self._gauge()
        self.ctx.dirty = True
        if state.connected:
            self.src.notify_ok = True
            self.src.notify_message = "listen stream connected"
            gauge.set(1)
            if self.listener is not None and self.listener.connects > self.connects_covered:
                # Events published while nobody listened are lost: re-list now.
                self.resync_due = True
        else:
            self.src.notify_ok = False
            self.src.notify_message = (
                f"listen stream disconnected ({state.error or 'closed'}); resync covers the gap"
            )
            gauge.set(0)
            metrics.LISTEN_RECONNECTS.labels(*self.ctx.labels()).inc()

    # -- webhook mode -------------------------------------------------------------------
    def _setup_webhook(self) -> None:
        """Receive this bucket's events from the operator's webhook receiver."""
        webhook = self.ctx.rt.webhook
        if webhook is None:
            self.src.notify_ok = False
            self.src.notify_message = (
                "the operator's webhook receiver is disabled (--webhook-port 0); resync only"
            )
            return
        source = self.ctx.watch.source
        self.route = webhook.register(source.bucket, source.prefix, self.queue)
        self.ensure_subscription()

    def ensure_subscription(self) -> None:
        """Subscribe the bucket to the operator's MinIO webhook target (idempotent)."""
        try:
            changed = self.store.ensure_webhook(self.s.webhook_arn)
        except SourceError as exc:
            if self.src.notify_message != exc.message:
                self.ctx.event(
                    "Warning", exc.reason, exc.message + "; changes are found by resync only"
                )
            self.src.notify_ok = False
            self.src.notify_message = exc.message
            self.ctx.dirty = True
            return
        if changed:
            self.ctx.log.info("bucket subscribed to %s", self.s.webhook_arn)
        self.src.notify_ok = True
        self.src.notify_message = "webhook subscription in place"
        self._gauge().set(1)
        self.ctx.dirty = True

    def probe(self, now: float) -> None:
        """Webhook mode: an endpoint outage may lose events; re-list once it is back."""
        if now < self.next_probe:
            return
        self.next_probe = now + self.s.source_probe_seconds
        try:
            self.store.check_bucket()
        except SourceError as exc:
            if self.probe_ok:
                self.probe_ok = False
                self.src.notify_ok = False
                self.src.notify_message = f"{exc.message}; will re-list when it is back"
                self._gauge().set(0)
                metrics.LISTEN_RECONNECTS.labels(*self.ctx.labels()).inc()
                self.ctx.dirty = True
                self.ctx.log.warning("source probe failed: %s", exc.message)
            return
        if not self.probe_ok:
            self.probe_ok = True
            self.ctx.log.info("source is back: re-listing (events of the outage may be lost)")
            self.resync_due = True
            self.settle_resync_at = now + self.s.source_settle_seconds
            self.ensure_subscription()
        elif self.settle_resync_at is not None and now >= self.settle_resync_at:
            # Writes made while MinIO was still bringing its webhook target online were
            # neither notified nor, if they came after the first re-listing, listed.
            self.settle_resync_at = None
            self.ctx.log.info("re-listing once more now that notifications have had time to settle")
            self.resync_due = True

    # -- full listing -------------------------------------------------------------------
    def resync(self) -> None:
        """Full listing into the tally; on failure mark the source not ready and back off."""
        ctx, src = self.ctx, self.src
        started = time.time()
        self.resync_due = False
        if self.listener is not None:
            self.connects_covered = self.listener.connects
        try:
            try:
                result = self._list_into_tally(streaming=True)
            except ListingOrderError as exc:
                ctx.log.warning("%s; repeating the listing without streaming sweeps", exc)
                result = self._list_into_tally(streaming=False)
        except SourceError as exc:
            was_ready = src.ready
            src.ready = False
            src.reason, src.message = exc.reason, exc.message
            self.next_resync = time.time() + self.resync_backoff
            self.resync_backoff = min(self.resync_backoff * 2, self.s.source_retry_max_seconds)
            ctx.dirty = True
            if was_ready:
                ctx.event("Warning", exc.reason, exc.message)
            ctx.log.warning("resync failed: %s", exc.message)
            return
        if result.listed >= 10_000:
            memory.release()
        elapsed = time.time() - started
        src.last_resync_time = now = time.time()
        src.last_resync_seconds = elapsed
        self.next_resync = now + ctx.watch.detection.resync_interval
        self.resync_backoff = 1.0
        key = ctx.labels()
        metrics.RESYNC_SECONDS.labels(*key).observe(elapsed)
        metrics.RESYNC_OBJECTS.labels(*key).set(result.listed)
        if result.changed:
            self.last_change_time = now
            if self.listed_once:  # the first listing of a session is not a repair
                metrics.RESYNC_CORRECTIONS.labels(*key).inc(result.changed)
                ctx.log.info("resync corrected %d keys that notifications missed", result.changed)
        self.listed_once = True
        if not src.ready:
            src.ready = True
            src.reason, src.message = "Listed", "bucket listed"
        ctx.dirty = True
        ctx.log.info(
            "resync: %d objects listed, %d corrected, %.2fs", result.listed, result.changed, elapsed
        )

    def _list_into_tally(self, *, streaming: bool) -> Any:
        session = self.tally.resync(streaming=streaming)
        feed = session.feed
        for i, (key, etag) in enumerate(self.store.iter_listing()):
            feed(key, etag)
            if i % 20000 == 19999:
                self.ctx.rt.report(self.ctx.key, "Resyncing")
                if self.ctx.stopped:
                    raise Restart("stopping during a resync")
        return session.finish()

    def counts(self) -> Mapping[str, LabelCounts]:
        return self.tally.counts()
